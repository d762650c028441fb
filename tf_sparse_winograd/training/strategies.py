"""tf.distribute strategies for --strategy, and which worker writes checkpoints."""

import os
import tempfile

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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}")


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
