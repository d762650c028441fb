"""Keras callbacks for pruning: `UpdatePruningStep` and `PruningSummaries`."""

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_winograd.pruning import view


class UpdatePruningStep(keras.callbacks.Callback):
    """Starts the pruning step at 0 and re-applies the masks at the end of every epoch.

    Pass it to `model.fit(..., callbacks=[UpdatePruningStep()])` as with tfmot. A freshly wrapped
    model has `pruning_step == -1`; this callback sets it to 0 at the start of training (a model
    reloaded mid-training keeps its step). At each epoch end the weights are set to weight * mask,
    so a model saved then holds exact zeros.
    """

    def __init__(self):
        super().__init__()
        self.prunable_layers = []

    def on_train_begin(self, logs=None):
        self.prunable_layers = view.collect_prunable_layers(self.model)
        for layer in self.prunable_layers:
            if not layer.built:
                continue
            if int(keras.ops.convert_to_numpy(layer.pruning_step)) < 0:
                layer.pruning_obj.assign_step(layer.pruning_step, tf.constant(0, tf.int64))

    def on_epoch_end(self, epoch, logs=None):
        for layer in self.prunable_layers:
            if layer.built:
                layer.pruning_obj.weight_mask_op()


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer density and threshold of every pruned weight to TensorBoard.

    Scalars `<wrapper name>/<weight>/density` (fraction of ones in the mask),
    `<wrapper name>/<weight>/weight_density` (fraction of non-zero weights) and
    `<wrapper name>/<weight>/threshold`, at step `model.optimizer.iterations`.

    Args:
      log_dir: directory of the summary files (non-empty string).
      update_freq: 'epoch' (default) or an int: write every `update_freq` training batches too.
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"`log_dir` must be a non-empty string. Received: log_dir={log_dir!r}")
        if update_freq != "epoch" and (isinstance(update_freq, bool)
                                       or not isinstance(update_freq, int) or update_freq <= 0):
            raise ValueError("`update_freq` must be 'epoch' or a positive int. "
                             f"Received: update_freq={update_freq!r}")
        if not callable(getattr(tf.summary, "scalar", None)):
            raise ImportError("PruningSummaries writes with tf.summary.scalar, which needs the "
                              "tensorboard package: pip install tensorboard")
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def _step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return 0
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def _write(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        step = self._step()
        with self._writer.as_default():
            for layer in view.collect_prunable_layers(self.model):
                for weight, mask, threshold in layer.pruning_vars:
                    base = f"{layer.name}/{weight.name.split('/')[-1].split(':')[0]}"
                    m = keras.ops.convert_to_numpy(mask)
                    w = keras.ops.convert_to_numpy(weight)
                    tf.summary.scalar(f"{base}/density", float(np.mean(m)), step=step)
                    tf.summary.scalar(f"{base}/weight_density",
                                      float(np.count_nonzero(w)) / max(w.size, 1), step=step)
                    tf.summary.scalar(f"{base}/threshold",
                                      float(keras.ops.convert_to_numpy(threshold)), step=step)
        self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
