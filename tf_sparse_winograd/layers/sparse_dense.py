"""`SparseDense`: a pruned Dense layer stored as its nonzeros and run on the sparse op.

The layer's weights are the kernel's nonzeros in CSR form, `row_ptr` (int32), `col_idx` and
`values`, in one of the op's two layouts (`kernel_layout`, see `tf_sparse_winograd.ops.packing`):
'unit_groups' (what `from_kernel` builds: 5 bytes per nonzero, uint8 indices, read by the op in
place, so serving holds the kernel once) or 'feature_rows' (a row per input feature, 6 bytes per
nonzero, of which the op keeps a regrouped copy: the layout of layers saved before
'unit_groups' existed, which a config without `kernel_layout` names). Calls run the
SparseWinograd>SparseDense op (`tf_sparse_winograd.ops.sparse_dense_matmul`), which checks the
kernel once per graph node and multiplies only the stored weights, with the batch in the vector
lanes; a ReLU activation is fused into it. Without a loadable op library the layer multiplies
with plain TF ops instead, after one warning.
"""

import keras
import numpy as np
import tensorflow as tf

_PACKAGE = "tf_sparse_winograd"


def _ops():
    """The ops module, imported on first use so that importing the layer never loads the op."""
    from tf_sparse_winograd import ops  # pylint: disable=import-outside-toplevel
    return ops


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SparseDense(keras.layers.Layer):
    """y = activation(x @ W + b) with W stored as its nonzeros (see the module docstring).

    Args:
      units: output features.
      in_features: input features (the kernel is (in_features, units)).
      nnz: number of stored nonzeros (the size of `values`).
      use_bias, activation: as for Dense.
      kernel_layout: 'unit_groups' or 'feature_rows' (see the module docstring); the default
        is the layout of configs written before the argument existed.
    """

    def __init__(self, units, in_features, nnz, use_bias=True, activation=None,
                 kernel_layout="feature_rows", **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        for argument, value, minimum in (("units", units, 1), ("in_features", in_features, 1),
                                         ("nnz", nnz, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"`{argument}` must be an integer >= {minimum}. "
                                 f"Received: {argument}={value!r}")
        self.units, self.in_features, self.nnz = int(units), int(in_features), int(nnz)
        self.kernel_layout = _ops().packing.check_dense_kernel_layout(kernel_layout)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: self.in_features})

    def build(self, input_shape):
        packing = _ops().packing
        if self.kernel_layout == "unit_groups":
            rows = packing.dense_unit_group_rows(self.in_features, self.units)
            index_shape, index_dtype = (self.nnz + packing.DENSE_INDEX_PADDING,), "uint8"
        else:
            rows = self.in_features
            index_shape, index_dtype = (self.nnz,), packing.dense_index_dtype(self.units)
        self.row_ptr = self.add_weight(name="row_ptr", shape=(rows + 1,), dtype="int32",
                                       initializer="zeros", trainable=False)
        self.col_idx = self.add_weight(name="col_idx", shape=index_shape, dtype=index_dtype,
                                       initializer="zeros", trainable=False)
        self.values = self.add_weight(name="values", shape=(self.nnz,), dtype="float32",
                                      initializer="zeros", trainable=False)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), dtype="float32",
                                     initializer="zeros", trainable=False)
                     if self.use_bias else None)

    def call(self, inputs):
        inputs = tf.cast(inputs, tf.float32)
        fused = keras.activations.serialize(self.activation) == "relu"
        flat = inputs if inputs.shape.rank == 2 else tf.reshape(inputs, [-1, self.in_features])
        ops = _ops()
        outputs = ops.sparse_dense_matmul(
            flat, tf.convert_to_tensor(self.row_ptr), tf.convert_to_tensor(self.col_idx),
            tf.convert_to_tensor(self.values), self.units,
            bias=tf.convert_to_tensor(self.bias) if self.use_bias else None,
            activation="relu" if fused else None,
            implementation="op" if ops.op_library_available() else "reference",
            kernel_layout=self.kernel_layout)
        if inputs.shape.rank != 2:
            outputs = tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))
            outputs.set_shape(self.compute_output_shape(tuple(inputs.shape)))
        if not fused and self.activation is not None:
            outputs = self.activation(outputs)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "in_features": self.in_features, "nnz": self.nnz,
                       "use_bias": self.use_bias, "kernel_layout": self.kernel_layout,
                       "activation": keras.activations.serialize(self.activation)})
        return config

    @classmethod
    def from_kernel(cls, kernel, bias=None, activation=None, name=None, **kwargs):
        """A built layer holding the nonzeros of a dense (in_features, units) kernel, in the
        'unit_groups' layout unless `kernel_layout` says otherwise."""
        kwargs.setdefault("kernel_layout", "unit_groups")
        row_ptr, col_idx, values = _ops().pack_dense_kernel(
            kernel, kernel_layout=kwargs["kernel_layout"])
        in_features, units = (int(d) for d in np.shape(kernel))
        layer = cls(units, in_features, int(values.shape[0]), use_bias=bias is not None,
                    activation=activation, name=name, **kwargs)
        layer.build((None, in_features))
        layer.row_ptr.assign(row_ptr)
        layer.col_idx.assign(col_idx)
        layer.values.assign(values)
        if bias is not None:
            layer.bias.assign(np.asarray(bias, np.float32))
        return layer
