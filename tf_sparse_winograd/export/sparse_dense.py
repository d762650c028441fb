"""`SparseDense`: a pruned Dense layer stored as its nonzeros, run as a dense matmul.

TensorFlow's sparse-times-dense kernels are 10-50x slower than a dense matmul for a pruned fully
connected layer of VGG-nagadomi's size (measured here: 4096x1024 at density 0.1, batch 32), so the
sparse form is for storage only:

  * the layer's weights are the kernel in CSR form (a row per input feature): `row_ptr` (int32),
    `col_idx` (int16 when the layer has fewer than 32768 units, else int32) and `values`, so a
    SavedModel or `.keras` file holds 6 bytes per nonzero instead of 4 bytes per weight;
  * called directly (Keras, eager or tf.function), the layer scatters its nonzeros into a dense
    kernel on every call: correct, but slow;
  * in a SavedModel written by `export_saved_model`, the dense kernel lives in a `DenseKernelCache`:
    a TensorFlow resource that is not saved but rebuilt from the (restored) CSR variables when the
    SavedModel is loaded, the way lookup tables are initialized. The serving graph then reads it
    like any variable and runs a plain matmul: small on disk, as fast as Dense in memory.
"""

import uuid

import keras
import numpy as np
import tensorflow as tf

_PACKAGE = "tf_sparse_winograd"


def _index_dtype(units):
    return "int16" if units <= np.iinfo(np.int16).max else "int32"


def _densify(row_ptr, col_idx, values, shape):
    """The dense (in_features, units) kernel of a CSR matrix with a row per input feature."""
    row_ptr = tf.convert_to_tensor(row_ptr)
    counts = row_ptr[1:] - row_ptr[:-1]
    rows = tf.repeat(tf.range(shape[0], dtype=tf.int32), counts)
    indices = tf.stack([rows, tf.cast(tf.convert_to_tensor(col_idx), tf.int32)], axis=1)
    return tf.scatter_nd(indices, tf.convert_to_tensor(values), shape)


class DenseKernelCache(tf.saved_model.experimental.TrackableResource):
    """A dense kernel computed from a SparseDense layer's CSR variables, rebuilt at load time.

    Not saved itself: a SavedModel stores only the CSR variables and this resource's initializer,
    which TensorFlow runs after restoring them.
    """

    def __init__(self, row_ptr, col_idx, values, shape):
        self._csr = (row_ptr, col_idx, values)
        self._shape = [int(d) for d in shape]
        self._shared_name = f"tfsw_dense_kernel_{uuid.uuid4().hex}"
        super().__init__()
        self._initialize()

    def _create_resource(self):
        # A name unique to this cache: with an empty shared_name, every cache's handle op in a
        # loaded SavedModel would resolve to the same resource (they share the node name).
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=self._shape,
                                      shared_name=self._shared_name)

    def _initialize(self):
        dense = _densify(*(tf.convert_to_tensor(v) for v in self._csr), self._shape)
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=dense)

    def read(self):
        value = tf.raw_ops.ReadVariableOp(resource=self.resource_handle, dtype=tf.float32)
        value.set_shape(self._shape)
        return value


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SparseDense(keras.layers.Layer):
    """y = activation(x @ W + b) with W stored as its nonzeros (see the module docstring).

    Args:
      units: output features.
      in_features: input features (the kernel is (in_features, units)).
      nnz: number of stored nonzeros (the size of `col_idx` and `values`).
      use_bias, activation: as for Dense.
    """

    def __init__(self, units, in_features, nnz, use_bias=True, activation=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        for argument, value, minimum in (("units", units, 1), ("in_features", in_features, 1),
                                         ("nnz", nnz, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"`{argument}` must be an integer >= {minimum}. "
                                 f"Received: {argument}={value!r}")
        self.units, self.in_features, self.nnz = int(units), int(in_features), int(nnz)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.dense_kernel_cache = None
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: self.in_features})

    def build(self, input_shape):
        self.row_ptr = self.add_weight(name="row_ptr", shape=(self.in_features + 1,),
                                       dtype="int32", initializer="zeros", trainable=False)
        self.col_idx = self.add_weight(name="col_idx", shape=(self.nnz,),
                                       dtype=_index_dtype(self.units), initializer="zeros",
                                       trainable=False)
        self.values = self.add_weight(name="values", shape=(self.nnz,), dtype="float32",
                                      initializer="zeros", trainable=False)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), dtype="float32",
                                     initializer="zeros", trainable=False)
                     if self.use_bias else None)

    def dense_kernel(self):
        """The (in_features, units) kernel: from the cache when one is attached, else scattered."""
        if self.dense_kernel_cache is not None:
            return self.dense_kernel_cache.read()
        return _densify(self.row_ptr, self.col_idx, self.values, (self.in_features, self.units))

    def attach_dense_kernel_cache(self):
        """Creates (and returns) the load-time-initialized dense kernel used while exporting."""
        self.dense_kernel_cache = DenseKernelCache(
            getattr(self.row_ptr, "value", self.row_ptr), getattr(self.col_idx, "value", self.col_idx),
            getattr(self.values, "value", self.values), (self.in_features, self.units))
        return self.dense_kernel_cache

    def detach_dense_kernel_cache(self):
        self.dense_kernel_cache = None

    def call(self, inputs):
        outputs = tf.matmul(tf.cast(inputs, tf.float32), self.dense_kernel()) if inputs.shape.rank == 2 \
            else tf.tensordot(tf.cast(inputs, tf.float32), self.dense_kernel(), axes=1)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "in_features": self.in_features, "nnz": self.nnz,
                       "use_bias": self.use_bias,
                       "activation": keras.activations.serialize(self.activation)})
        return config

    @classmethod
    def from_kernel(cls, kernel, bias=None, activation=None, name=None, **kwargs):
        """A built layer holding the nonzeros of a dense (in_features, units) kernel."""
        kernel = np.asarray(kernel, dtype=np.float32)
        if kernel.ndim != 2:
            raise ValueError(f"`kernel` must be 2-D (in_features, units). Received: shape={kernel.shape}")
        in_features, units = kernel.shape
        rows, cols = np.nonzero(kernel)  # row-major: sorted by row
        layer = cls(units, in_features, len(rows), use_bias=bias is not None,
                    activation=activation, name=name, **kwargs)
        layer.build((None, in_features))
        counts = np.bincount(rows, minlength=in_features)
        layer.row_ptr.assign(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        layer.col_idx.assign(cols.astype(_index_dtype(units)))
        layer.values.assign(kernel[rows, cols])
        if bias is not None:
            layer.bias.assign(np.asarray(bias, np.float32))
        return layer
