"""`PruneLowMagnitude`: a Keras 3 wrapper that owns the pruning state of one layer.

For every prunable weight of the wrapped layer the wrapper creates a non-trainable `mask` (same
shape as the weight, 0/1) and a scalar `threshold`; it also owns an int64 `pruning_step`. All of
them are ordinary layer weights, so a `.keras` file saved mid-training carries them.

How the zeros stay exactly zero:
  * in every call (training or not) the weight is set to weight * mask before the wrapped layer
    runs, so the forward pass always sees the masked weight;
  * the weight variable's `constraint` becomes `mask * previous_constraint(w)`; Keras 3 optimizers
    apply `variable.constraint` after every update (after momentum, Adam moments and decoupled
    weight decay), so a pruned entry is exactly zero again after each optimizer step.

Step semantics: `pruning_step` starts at -1 ("never trained"); `UpdatePruningStep` sets it to 0 at
the start of training. Each training call uses step = max(pruning_step, 0), recomputes the masks
if the schedule says so at that step, then stores step + 1. So the first training batch is step 0,
and `pruning_step` counts the training batches seen.
"""

import inspect

import keras
import tensorflow as tf

from tf_sparse_winograd.pruning import prunable_layer
from tf_sparse_winograd.pruning import pruning_impl
from tf_sparse_winograd.pruning import pruning_schedule as schedules

_PACKAGE = "tf_sparse_winograd"


class MaskConstraint(keras.constraints.Constraint):
    """w -> mask * constraint(w); composes with the weight's existing constraint.

    Holds a variable, so it is not serialisable; the wrapper re-creates it when it is built.
    """

    def __init__(self, mask, constraint=None):
        self.mask = mask
        self.constraint = constraint

    def __call__(self, w):
        if self.constraint is not None:
            w = self.constraint(w)
        return w * tf.cast(tf.convert_to_tensor(self.mask), w.dtype)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PruneLowMagnitude(keras.layers.Wrapper):
    """Magnitude pruning of a layer's prunable weights during training.

    Args:
      layer: the layer to prune: a layer with `get_prunable_weights()` (e.g. `WinogradConv2D`,
        pruned in the Winograd domain), or a Keras convolution / Dense layer (its kernel).
      pruning_schedule: callable step -> (should_prune, sparsity) with `get_config()`; a
        `ConstantSparsity` / `PolynomialDecay` from this package or from tfmot, or a serialized
        schedule dict. Default `ConstantSparsity(0.5, 0)`.
      block_size: (rows, cols): prune blocks of the weights' last two axes whole, scored by
        their mean |w| (tfmot's `block_size` with AVG pooling); the schedule's sparsity is then a
        fraction of blocks. (1, 4) on a `WinogradConv2D` prunes 4 filters together per Winograd
        coordinate and input channel, which the sparse op runs faster. Default (1, 1).
      criterion: "magnitude" (the paper: rank by |w|) or "normalized_magnitude" (rank by
        |w| / the layer's `get_pruning_scales()`; for `WinogradConv2D` |U_ij| / (|G_i| |G_j|),
        which keeps F(4x4) and F(6x6) kernels from losing whole Winograd coordinates at low
        density; layers without scales are ranked by |w|).
      **kwargs: Keras layer arguments (`name`, `trainable`, `dtype`). The default name is
        `prune_low_magnitude_<layer name>`.
    """

    def __init__(self, layer, pruning_schedule=schedules.ConstantSparsity(0.5, 0),
                 block_size=(1, 1), criterion="magnitude", **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError("`layer` must be a keras.layers.Layer instance. "
                             f"Received: layer={layer!r}")
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"Layer {layer.name!r} is already wrapped in PruneLowMagnitude.")
        if not prunable_layer.is_prunable(layer):
            raise ValueError(
                "`layer` must define `get_prunable_weights()` or be a Keras convolution or Dense "
                f"layer. Received: layer={layer.name!r} ({type(layer).__name__})")
        if isinstance(pruning_schedule, dict):
            pruning_schedule = schedules.deserialize(pruning_schedule)
        pruning_schedule = schedules.coerce_schedule(pruning_schedule)
        self.block_size = pruning_impl.check_block_size(block_size)
        self.criterion = prunable_layer.check_criterion(criterion)
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.pruning_obj = None
        self._masked_weights = ()

    # ----------------------------------------------------------------------------- variables
    def build(self, input_shape=None):
        super().build(input_shape)
        weights = prunable_layer.get_prunable_weights(self.layer)
        triples = []
        for index, weight in enumerate(weights):
            base = weight.name.split("/")[-1].split(":")[0]
            mask = self.add_weight(
                name=f"{base}_mask", shape=tuple(weight.shape), dtype=weight.dtype,
                initializer="ones", trainable=False, aggregation="only_first_replica")
            threshold = self.add_weight(
                name=f"{base}_threshold", shape=(), dtype=weight.dtype, initializer="zeros",
                trainable=False, aggregation="only_first_replica")
            # Attributes, so that tf.train.Checkpoint (which tracks by attribute) saves them.
            setattr(self, f"mask_{index}", mask)
            setattr(self, f"threshold_{index}", threshold)
            if not isinstance(weight.constraint, MaskConstraint):
                weight.constraint = MaskConstraint(mask, weight.constraint)
            triples.append((weight, mask, threshold))
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype="int64",
            initializer=keras.initializers.Constant(-1), trainable=False,
            aggregation="only_first_replica")
        # A tuple of tuples inside a plain object, so that Keras does not track the wrapped
        # layer's weights a second time as this layer's own.
        self.pruning_obj = pruning_impl.Pruning(
            step_fn=lambda: tf.convert_to_tensor(pruning_impl.tf_variable(self.pruning_step)),
            pruning_vars=triples, pruning_schedule=self.pruning_schedule,
            block_size=self.block_size,
            scales=prunable_layer.get_pruning_scales(self.layer, weights, self.criterion))
        self.built = True

    @property
    def pruning_vars(self):
        """List of (weight, mask, threshold) variable triples."""
        return self.pruning_obj.pruning_vars if self.pruning_obj is not None else []

    @property
    def prunable_weights(self):
        return [w for w, _, _ in self.pruning_vars]

    @property
    def masks(self):
        return [m for _, m, _ in self.pruning_vars]

    @property
    def thresholds(self):
        return [t for _, _, t in self.pruning_vars]

    # ------------------------------------------------------------------------------ forward
    def call(self, inputs, training=None, **kwargs):
        if isinstance(training, (bool, type(None))):
            self.pruning_obj.training_update(self.pruning_step, training=bool(training))
        else:
            tf.cond(tf.cast(training, tf.bool),
                    lambda: self.pruning_obj.training_update(self.pruning_step, True),
                    lambda: self.pruning_obj.training_update(self.pruning_step, False))
        if "training" in inspect.signature(self.layer.call).parameters:
            kwargs["training"] = training
        return self.layer(inputs, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    # ------------------------------------------------------------------------ serialization
    def get_config(self):
        config = super().get_config()
        config["pruning_schedule"] = schedules.serialize(self.pruning_schedule)
        config["block_size"] = list(self.block_size)
        config["criterion"] = self.criterion
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                      custom_objects=custom_objects)
        schedule = schedules.deserialize(config.pop("pruning_schedule"),
                                         custom_objects=custom_objects)
        block_size = tuple(config.pop("block_size", (1, 1)))
        return cls(layer, pruning_schedule=schedule, block_size=block_size, **config)

