"""tf.distribute strategies for --strategy, and which worker writes checkpoints."""

import os
import tempfile

import keras
import tensorflow as tf


def make_strategy(name):
    """'default' (one device), 'mirrored' (all local devices) or 'multi_worker' (from TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        # Without GPUs, MirroredStrategy over several logical CPUs needs an explicit device list
        # and a cross-device op that works on CPU.
        ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=ops)
    if name == "multi_worker":
        return _MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}")


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3's `fit` gives it.

    With more than one worker, Keras 3.15's `fit` failed at once (keras-team/keras#20585):
    - it starts by reducing the first distributed batch, an (images, labels) tuple, with
      `strategy.reduce("MEAN", batch, axis=None)`, and MultiWorkerMirroredStrategy does not
      reduce a nest ("Attempt to convert a value (PerReplica ...) with an unsupported type to a
      Tensor"; TensorFlow 2.21 has a TODO there);
    - every step reduces the per-replica scalars (loss, metrics) with
      `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar ("Invalid reduction
      dimension 0 for input with 0 dimensions").
    Here a nest is reduced value by value, and a scalar across replicas only: what both calls
    mean, and what MirroredStrategy gives them.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_one(v):
            local = (self.experimental_local_results(v)[0]
                     if isinstance(v, tf.distribute.DistributedValues) else v)
            scalar = getattr(getattr(local, "shape", None), "rank", None) == 0
            return parent.reduce(reduce_op, v, axis=None if scalar else axis)

        return tf.nest.map_structure(reduce_one, value)


def is_chief(strategy):
    """True unless this is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())


def write_dir(directory, strategy):
    """Where this worker writes: `directory` on the chief, a private temporary one elsewhere.

    Every worker must take part in saving a checkpoint of a multi-worker model; only the chief's
    copy is kept.
    """
    if is_chief(strategy):
        return directory
    resolver = strategy.cluster_resolver
    return os.path.join(tempfile.gettempdir(), f"worker_{resolver.task_type}_{resolver.task_id}",
                        os.path.basename(directory.rstrip("/")))


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy):
    """Returns once every worker of a multi-worker strategy has called it (a collective sum of
    one value); does nothing under other strategies. The chief writes a phase's weights before
    it, so that no worker reads them before they are complete."""
    if _multi_worker(strategy):
        one = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(1.0))
        strategy.reduce("SUM", one, axis=None).numpy()


def sync_batch_norm_statistics(model, strategy):
    """Sets every BatchNormalization's moving statistics to their mean over the workers of a
    multi-worker strategy (elsewhere: nothing to do).

    Keras updates the moving statistics from each worker's own batches and never reduces them
    across workers (their variables have no aggregation), so after an epoch each worker holds
    other statistics: the chief would checkpoint and export its own, and a resumed run would
    start every worker from the chief's. Called at every epoch end, on every worker.
    """
    if not _multi_worker(strategy):
        return
    variables = [getattr(v, "value", v)
                 for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
                 if isinstance(layer, keras.layers.BatchNormalization)
                 for v in (layer.moving_mean, layer.moving_variance)]
    if not variables:
        return
    local = tf.concat([tf.reshape(strategy.experimental_local_results(v)[0], [-1])
                       for v in variables], axis=0)
    per_replica = strategy.experimental_distribute_values_from_function(lambda _: local)
    mean = strategy.reduce("MEAN", per_replica, axis=None)
    offset = 0
    for v in variables:
        size = v.shape.num_elements()
        v.assign(tf.reshape(mean[offset:offset + size], v.shape))
        offset += size
