"""Magnitude-pruning maths: masks, thresholds and their cross-replica-safe updates.

Knows nothing of Keras layers: `Pruning` takes a step callable, a schedule and a list of
`(weight, mask, threshold)` variable triples (tf.Variables, Keras variables or distributed
variables) and returns the ops that update them.

Mask rule: to keep density d of a tensor of n elements, keep exactly k = max(1, round(n * d)) of
them, the k largest in absolute value; among equal magnitudes the element with the lower flat
(row-major) index is kept, so the result is deterministic and its density is exact.

Normalized magnitude (`scale`, one positive array per weight, broadcastable to it): entries are
ranked by |w| / scale instead of |w|, so that coordinates which a layer's parametrisation makes
systematically smaller (a Winograd kernel's, by its transform's row norms) are not pruned for
that alone. The threshold is then in those units.

Block pruning (`block_size` = (rows, cols) over the last two axes, tfmot's convention with AVG
pooling): the weight is cut into blocks of rows x cols entries of its last two axes (partial
blocks at the ends), each block scored by the mean |w| of its entries, and k of the n blocks kept
by the rule above, whole. For a Winograd kernel (a, a, in, filters), (1, 4) prunes each
(coordinate, channel) for 4 consecutive filters together, which the sparse op runs 4 at a time.

Distribution: every assignment goes through `_assign`, which (in a replica context) enters the
cross-replica context with `merge_call` and writes through `strategy.extended.update`. A new mask is
computed once, from the weight as read in the cross-replica context (the primary copy), and the same
tensor is written to every replica, so masks are identical across replicas by construction.
"""

import numpy as np
import tensorflow as tf


def tf_variable(v):
    """The tf.Variable (possibly distributed) behind a Keras variable."""
    inner = getattr(v, "_value", None)  # keras.Variable (TensorFlow backend) holds a tf.Variable.
    return inner if isinstance(inner, tf.Variable) else v


def keep_count(size, sparsity):
    """Number of elements kept at `sparsity`: max(1, round(size * (1 - sparsity))) (tfmot's rule).

    Computed in float32 as tfmot does, with round-half-to-even.
    """
    size = tf.cast(size, tf.float32)
    keep = tf.math.round(size * (1.0 - tf.cast(sparsity, tf.float32)))
    return tf.cast(tf.math.maximum(keep, 1.0), tf.int32)


def magnitude_mask(weights, keep):
    """Returns (threshold, mask) keeping the `keep` largest |weights|.

    Args:
      weights: a float tensor of any shape.
      keep: int scalar (Python or tensor), clipped to [1, size].

    Returns:
      threshold: |w| of the smallest kept element, in weights.dtype.
      mask: 0/1 tensor of weights' shape and dtype with exactly `keep` ones.
    """
    weights = tf.convert_to_tensor(weights)
    flat = tf.reshape(tf.math.abs(weights), [-1])
    size = tf.size(flat)
    keep = tf.clip_by_value(tf.cast(keep, tf.int32), 1, size)
    # top_k is stable: among equal values the lower index comes first. rank[i] is the position
    # of element i in that order; static shapes throughout (no slicing by `keep`), so XLA works.
    values, indices = tf.math.top_k(flat, k=size, sorted=True)
    rank = tf.math.invert_permutation(indices)
    mask = tf.cast(rank < keep, weights.dtype)
    threshold = tf.gather(values, keep - 1)
    return tf.cast(threshold, weights.dtype), tf.reshape(mask, tf.shape(weights))


def check_block_size(block_size):
    """block_size as a tuple of two positive ints; a ValueError naming it otherwise."""
    try:
        rows, cols = block_size
        valid = all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                    for b in (rows, cols))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError("`block_size` must be a pair of positive ints (rows, cols) over a "
                         f"weight's last two axes. Received: block_size={block_size!r}")
    return int(rows), int(cols)


def num_blocks(shape, block_size):
    """Number of (possibly partial) blocks of a weight of static `shape`."""
    rows, cols = block_size
    if rows == cols == 1:
        return int(np.prod(shape))
    lead = int(np.prod(shape[:-2]))
    return lead * -(-int(shape[-2]) // rows) * -(-int(shape[-1]) // cols)


def block_magnitude_mask(weights, keep, block_size, scale=None):
    """Returns (threshold, mask) keeping the `keep` blocks of largest mean |weights| / scale.

    Args:
      weights: a float tensor with a static shape, rank >= 2 unless block_size is (1, 1).
      keep: int scalar, the number of blocks kept (clipped to [1, number of blocks]).
      block_size: (rows, cols) of a block over the last two axes.
      scale: None (plain magnitude) or positive values broadcastable to `weights` dividing |w|
        before blocks are scored (normalized magnitude).

    Returns:
      threshold: the score of the smallest kept block, in weights.dtype.
      mask: 0/1 tensor of weights' shape and dtype, whole blocks on or off.
    """
    weights = tf.convert_to_tensor(weights)
    scores = tf.math.abs(weights)
    if scale is not None:
        scores = scores / tf.cast(scale, weights.dtype)
    rows, cols = block_size
    if rows == cols == 1:
        return magnitude_mask(scores, keep)
    shape = weights.shape.as_list()
    if len(shape) < 2:
        raise ValueError(f"Block pruning needs a weight of rank >= 2. Received: shape={shape}")
    lead, height, width = int(np.prod(shape[:-2])), shape[-2], shape[-1]
    blocks_h, blocks_w = -(-height // rows), -(-width // cols)
    padding = [[0, 0], [0, blocks_h * rows - height], [0, blocks_w * cols - width]]

    def block_sums(x):
        x = tf.pad(tf.reshape(x, [lead, height, width]), padding)
        return tf.reduce_sum(tf.reshape(x, [lead, blocks_h, rows, blocks_w, cols]), axis=[2, 4])

    block_scores = block_sums(scores) / block_sums(tf.ones_like(scores))
    threshold, block_mask = magnitude_mask(block_scores, keep)
    mask = tf.repeat(tf.repeat(block_mask, rows, axis=1), cols, axis=2)[:, :height, :width]
    return threshold, tf.reshape(mask, shape)


def strategy_of(variables):
    """The tf.distribute strategy the first distributed variable belongs to, or None."""
    for v in variables:
        strategy = getattr(tf_variable(v), "distribute_strategy", None)
        if strategy is not None:
            return strategy
    return None


def _in_cross_replica(fn, variables=()):
    """Runs fn(strategy) in a cross-replica context, entering it with merge_call when needed.

    Outside any strategy scope (e.g. in a Keras callback) with distributed `variables`, enters
    their strategy's scope, whose default context is cross-replica.
    """
    if not tf.distribute.has_strategy():
        strategy = strategy_of(variables)
        if strategy is not None:
            with strategy.scope():
                return fn(strategy)
    if tf.distribute.in_cross_replica_context():
        return fn(tf.distribute.get_strategy())
    return tf.distribute.get_replica_context().merge_call(fn)


def _assign(strategy, variable, value):
    """Assigns `value` (a tensor, the same for every replica) to `variable` on every device."""
    return strategy.extended.update(
        tf_variable(variable), lambda v, x: v.assign(tf.cast(x, v.dtype)), args=(value,),
        group=True)


def _apply_mask(strategy, weight, mask):
    """weight <- weight * mask on every device, each with its own copy of both."""
    return strategy.extended.update(
        tf_variable(weight), lambda w, m: w.assign(w * tf.cast(m, w.dtype)),
        args=(tf_variable(mask),), group=True)


class Pruning:
    """Magnitude-based pruning of a set of weights.

    Args:
      step_fn: callable returning the current pruning step (int64 scalar).
      pruning_vars: list of (weight, mask, threshold) variable triples.
      pruning_schedule: callable step -> (should_prune, sparsity).
      block_size: (rows, cols) blocks over each weight's last two axes, kept or pruned whole;
        sparsity and keep counts then count blocks. (1, 1) prunes single entries.
      scales: None (plain magnitude) or one entry per weight, each None or positive values
        broadcastable to the weight that divide |w| before ranking (normalized magnitude).
    """

    def __init__(self, step_fn, pruning_vars, pruning_schedule, block_size=(1, 1), scales=None):
        self._step_fn = step_fn
        self._pruning_vars = list(pruning_vars)
        self._pruning_schedule = pruning_schedule
        self._block_size = check_block_size(block_size)
        self._scales = [None] * len(self._pruning_vars) if scales is None else list(scales)
        if len(self._scales) != len(self._pruning_vars):
            raise ValueError(f"Expected {len(self._pruning_vars)} scales (one per pruned weight). "
                             f"Received: {len(self._scales)}")

    def _new_mask(self, index, value, keep_fn):
        """(threshold, mask) of weight `index`, keeping keep_fn(number of blocks) blocks."""
        blocks = num_blocks(value.shape.as_list(), self._block_size)
        return block_magnitude_mask(value, keep_fn(blocks), self._block_size,
                                    self._scales[index])

    @property
    def pruning_vars(self):
        return list(self._pruning_vars)

    def _mask_update(self, strategy, keep_fn):
        updates = []
        for index, (weight, mask, threshold) in enumerate(self._pruning_vars):
            value = tf.convert_to_tensor(tf_variable(weight))
            new_threshold, new_mask = self._new_mask(index, value, keep_fn)
            updates.append(_assign(strategy, mask, new_mask))
            updates.append(_assign(strategy, threshold, new_threshold))
            with tf.control_dependencies(updates):
                updates.append(_apply_mask(strategy, weight, mask))
        return tf.group(updates)

    def conditional_mask_update(self, step=None):
        """Recomputes masks (and zeroes pruned weights) if the schedule prunes at `step`.

        `step` defaults to `step_fn()`. Safe in replica and cross-replica contexts.
        """
        def fn(strategy):
            current = self._step_fn() if step is None else step
            should_prune, sparsity = self._pruning_schedule(current)
            return tf.cond(
                tf.convert_to_tensor(should_prune),
                lambda: self._mask_update(strategy, lambda size: keep_count(size, sparsity)),
                tf.no_op)
        return _in_cross_replica(fn, self._all_variables())

    def training_update(self, step_variable, training=True):
        """One forward-pass update, in a single cross-replica section.

        If `training`: step = max(step_variable, 0); masks recomputed if the schedule prunes at
        `step`; step_variable <- step + 1. Always: weight <- weight * mask.
        """
        def fn(strategy):
            deps = []
            if training:
                step = tf.math.maximum(tf.convert_to_tensor(tf_variable(step_variable)),
                                       tf.constant(0, tf.int64))
                should_prune, sparsity = self._pruning_schedule(step)
                update = tf.cond(
                    tf.convert_to_tensor(should_prune),
                    lambda: self._mask_update(strategy,
                                              lambda size: keep_count(size, sparsity)),
                    tf.no_op)
                with tf.control_dependencies([update]):
                    deps.append(_assign(strategy, step_variable, step + 1))
            with tf.control_dependencies(deps):
                return tf.group(
                    [_apply_mask(strategy, w, m) for w, m, _ in self._pruning_vars])
        return _in_cross_replica(fn, self._all_variables() + [step_variable])

    def _all_variables(self):
        return [v for triple in self._pruning_vars for v in triple]

    def mask_update_to_count(self, keep_counts):
        """Unconditionally prunes weight i to exactly keep_counts[i] elements (or blocks)."""
        keep_counts = list(keep_counts)
        if len(keep_counts) != len(self._pruning_vars):
            raise ValueError(f"Expected {len(self._pruning_vars)} keep counts. "
                             f"Received: keep_counts={keep_counts}")

        def fn(strategy):
            updates = []
            for index, ((weight, mask, threshold), keep) in enumerate(
                    zip(self._pruning_vars, keep_counts)):
                value = tf.convert_to_tensor(tf_variable(weight))
                new_threshold, new_mask = self._new_mask(index, value, lambda _, k=keep: k)
                updates.append(_assign(strategy, mask, new_mask))
                updates.append(_assign(strategy, threshold, new_threshold))
                with tf.control_dependencies(updates):
                    updates.append(_apply_mask(strategy, weight, mask))
            return tf.group(updates)
        return _in_cross_replica(fn, self._all_variables())

    def weight_mask_op(self):
        """weight <- weight * mask for every pruned weight."""
        def fn(strategy):
            return tf.group([_apply_mask(strategy, w, m) for w, m, _ in self._pruning_vars])
        return _in_cross_replica(fn, self._all_variables())

    def assign_step(self, step_variable, value):
        """Sets a step variable on every replica."""
        return _in_cross_replica(lambda strategy: _assign(strategy, step_variable, value),
                                 [step_variable])
