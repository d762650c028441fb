"""Public entry points: prune_low_magnitude, prune_to_density, strip_pruning, prune_scope."""

import numbers

import keras
import numpy as np

from tf_sparse_winograd import cloning
from tf_sparse_winograd.pruning import prunable_layer
from tf_sparse_winograd.pruning import pruning_impl
from tf_sparse_winograd.pruning import pruning_schedule as schedules
from tf_sparse_winograd.pruning import pruning_wrapper
from tf_sparse_winograd.pruning import view

PruneLowMagnitude = pruning_wrapper.PruneLowMagnitude


def prune_scope():
    """A custom-object scope holding the pruning classes (not needed: they are registered)."""
    return keras.saving.custom_object_scope({
        "PruneLowMagnitude": PruneLowMagnitude,
        "ConstantSparsity": schedules.ConstantSparsity,
        "PolynomialDecay": schedules.PolynomialDecay,
    })


def _is_schedule(obj):
    return isinstance(obj, schedules.PruningSchedule) or (
        callable(obj) and callable(getattr(obj, "get_config", None)))


def _density_schedule(density, name):
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not (
            0.0 < density <= 1.0):
        raise ValueError(f"A density must be a float in (0, 1]. Received: density={density!r} "
                         f"for layer {name!r}")
    return schedules.ConstantSparsity(1.0 - float(density), begin_step=0)


def _resolve(spec, layer):
    """The schedule for `layer` from a schedule, a density, a {name: ...} dict or a callable."""
    if isinstance(spec, dict):
        value = spec.get(layer.name)
    elif _is_schedule(spec) or spec is None or isinstance(spec, numbers.Real):
        value = spec
    elif callable(spec):
        value = spec(layer)
    else:
        raise ValueError("`pruning_schedule` must be a schedule, a density, a dict "
                         f"{{layer_name: schedule or density}} or a callable layer -> schedule. "
                         f"Received: pruning_schedule={spec!r}")
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _density_schedule(value, layer.name)
    return schedules.coerce_schedule(value)


def _first_convolution(model):
    return next((layer for layer in view.walk_layers(model) if view.is_convolution(layer)), None)


def prune_low_magnitude(to_prune, pruning_schedule=schedules.ConstantSparsity(0.5, 0),
                        skip_first_conv=False, block_size=(1, 1), criterion="magnitude",
                        **kwargs):
    """Wraps prunable layers in `PruneLowMagnitude` (tfmot's API, for Keras 3).

    Args:
      to_prune: a layer, a list of layers, or a built Sequential / functional model. A model is
        cloned (fresh layers holding copies of the weights; the original is left untouched) and
        its optimizer is not carried over.
      pruning_schedule: what to prune, per layer:
        * a schedule (`ConstantSparsity`, `PolynomialDecay`, a tfmot schedule, or any callable
          step -> (should_prune, sparsity) with `get_config`) applied to every prunable layer;
        * a float density d in (0, 1], short for `ConstantSparsity(1 - d, begin_step=0)`;
        * a dict {layer name: schedule, density or None}; layers not named are not pruned;
        * a callable layer -> schedule, density or None.
      skip_first_conv: leave the first convolution of a model unpruned (the paper's default; off
        here by default, as in tfmot).
      block_size: (rows, cols) blocks of each weight's last two axes pruned whole (see
        `PruneLowMagnitude`); (1, 4) lets the sparse op run 4 filters at a time.
      criterion: "magnitude" (rank by |w|, the paper) or "normalized_magnitude" (rank by |w|
        divided by each layer's `get_pruning_scales()`: |U_ij| / (|G_i| |G_j|) for Winograd
        kernels, where plain magnitude would prune F(4x4)'s coordinates of small |G_i| whole).
      **kwargs: passed to the wrapper when `to_prune` is a single layer.

    Returns:
      The wrapped layer, list or model. Non-prunable layers, and layers whose schedule resolves to
      None, are left as they are. Layers already wrapped are kept.
    """
    prunable_layer.check_criterion(criterion)

    def wrap(layer, **extra):
        if isinstance(layer, PruneLowMagnitude) or not prunable_layer.is_prunable(layer):
            return layer
        schedule = _resolve(pruning_schedule, layer)
        if schedule is None:
            return layer
        return PruneLowMagnitude(layer, pruning_schedule=schedule, block_size=block_size,
                                 criterion=criterion, **extra)

    if isinstance(to_prune, (list, tuple)):
        return [wrap(layer) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        view.check_model(to_prune, "prune_low_magnitude", "to_prune")
        skipped = _first_convolution(to_prune) if skip_first_conv else None

        def make_layer(layer):
            if isinstance(layer, PruneLowMagnitude):
                return cloning.fresh_copy(layer)
            new_layer, copy = cloning.fresh_copy(layer)
            if layer is skipped:
                return new_layer, copy
            wrapped = wrap(new_layer)
            if wrapped is new_layer:
                return new_layer, copy
            return wrapped, lambda w: copy(w.layer)

        return cloning.clone_with(to_prune, make_layer)
    if isinstance(to_prune, keras.layers.Layer):
        if not prunable_layer.is_prunable(to_prune):
            raise ValueError("Layer is not prunable: it has no `get_prunable_weights()` and its "
                             "class is not registered (register_layer). Received: "
                             f"to_prune={to_prune.name!r} ({type(to_prune).__name__})")
        return wrap(to_prune, **kwargs)
    raise TypeError("`prune_low_magnitude` accepts a Keras layer, a list of layers, or a "
                    f"Sequential / functional model. Received: to_prune={to_prune!r} "
                    f"(type {type(to_prune).__name__})")


def _density_for(spec, layer):
    if isinstance(spec, dict):
        return spec.get(layer.name)
    if callable(spec) and not isinstance(spec, numbers.Real):
        return spec(layer)
    return spec


def prune_to_density(model, density, skip_first_conv=True, block_size=(1, 1),
                     criterion="magnitude"):
    """The paper's one-shot step: prune every prunable layer to `density` by magnitude, now.

    Each prunable weight keeps exactly max(1, round(density * size)) entries, the largest in
    absolute value (ties: lower flat index first), or under `criterion="normalized_magnitude"`
    the largest |w| / scale (see `prune_low_magnitude`). The returned model is wrapped for
    retraining with the masks fixed: its schedule is `ConstantSparsity(1 - density, 0,
    end_step=0)` and its pruning step is already 1, so training never recomputes the masks, and
    the optimizer keeps the pruned weights at exactly zero.

    Args:
      model: a built Sequential or functional model; pruning wrappers already in it are stripped
        first (their zeros kept), so rounds of pruning (0.7, 0.6, ...) are repeated calls.
      density: a float in (0, 1], a dict {layer name: density or None} (layers not named are not
        pruned) or a callable layer -> density or None.
      skip_first_conv: leave the first convolution dense (the paper's default).
      block_size: (rows, cols) blocks of each weight's last two axes pruned whole; the density is
        then that of the blocks, max(1, round(density * blocks)) of them kept, scored by mean |w|.
        (1, 4) on Winograd kernels prunes 4 filters together (faster in the sparse op).
      criterion: "magnitude" or "normalized_magnitude" (see `prune_low_magnitude`).

    Returns:
      A new model with `PruneLowMagnitude` wrappers; compile it and train with
      `UpdatePruningStep`.
    """
    view.check_model(model, "prune_to_density")
    if view.collect_prunable_layers(model):
        model = strip_pruning(model)
    densities = {}

    def schedule_for(layer):
        d = _density_for(density, layer)
        if d is None:
            return None
        schedules_d = _density_schedule(d, layer.name)  # validates d
        densities[layer.name] = float(d)
        return schedules.ConstantSparsity(schedules_d.target_sparsity, begin_step=0, end_step=0,
                                          frequency=1)

    block_size = pruning_impl.check_block_size(block_size)
    pruned = prune_low_magnitude(model, pruning_schedule=schedule_for,
                                 skip_first_conv=skip_first_conv, block_size=block_size,
                                 criterion=criterion)
    for wrapper in view.collect_prunable_layers(pruned):
        d = densities[wrapper.layer.name]
        keeps = [max(1, int(round(d * pruning_impl.num_blocks(tuple(w.shape), block_size))))
                 for w in wrapper.prunable_weights]
        wrapper.pruning_obj.mask_update_to_count(keeps)
        wrapper.pruning_obj.assign_step(wrapper.pruning_step, np.int64(1))
    return pruned


def _masked_weights(wrapper):
    inner = wrapper.layer
    masks = {id(w): m for w, m, _ in wrapper.pruning_vars}
    values = []
    for variable in inner.weights:
        value = keras.ops.convert_to_numpy(variable)
        if id(variable) in masks:
            value = value * keras.ops.convert_to_numpy(masks[id(variable)]).astype(value.dtype)
        values.append(value)
    return values


def strip_pruning(model):
    """Removes the pruning wrappers: a plain model with the same layer classes and names.

    The weights are copies with the masks applied (pruned entries exactly zero); the wrapped
    layers' variable constraints are not carried over. Accepts a Sequential / functional model or
    a single built `PruneLowMagnitude` layer (returns a new, built copy of the inner layer).
    """
    if isinstance(model, PruneLowMagnitude):
        return _strip_wrapper(model)
    view.check_model(model, "strip_pruning")

    def make_layer(layer):
        if isinstance(layer, PruneLowMagnitude):
            weights = _masked_weights(layer)
            return cloning.fresh_layer(layer.layer), lambda new: new.set_weights(weights)
        return cloning.fresh_copy(layer)

    return cloning.clone_with(model, make_layer)


def _strip_wrapper(wrapper):
    if not wrapper.built:
        raise ValueError("`strip_pruning` needs a built wrapper.")
    new_layer = cloning.fresh_layer(wrapper.layer)
    shapes = getattr(wrapper.layer, "_build_shapes_dict", None)
    if shapes:
        new_layer.build(**shapes)
    else:
        new_layer.build(None)
    new_layer.set_weights(_masked_weights(wrapper))
    return new_layer
