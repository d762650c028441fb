"""Epoch checkpoints that a killed run resumes from with nothing lost.

`EpochCheckpoint` saves {model, optimizer, epoch} with a `tf.train.CheckpointManager` at the end of
every epoch (all variables: weights, batch-norm statistics, pruning masks and step, optimizer
slots and iteration count). `restore_latest` is called before `fit`; training then continues with
`initial_epoch` set to the restored epoch. Each invocation appends a line to `progress.jsonl`
(epoch and optimizer iterations at start and at every epoch end), which is how a run (and the
tests) can see that it resumed. A kill can cut the last line of that file short: the next append
drops the fragment, and `read_progress` skips it.
"""

import json
import os
import time

import keras
import tensorflow as tf

from tf_sparse_winograd.training import strategies


class PhaseCheckpoint:
    """Owns the checkpoint of one phase: a CheckpointManager over model, optimizer and epoch."""

    def __init__(self, directory, model, optimizer, strategy, max_to_keep=2):
        self.directory = directory
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, strategies.write_dir(os.path.join(directory, "checkpoints"), strategy),
            max_to_keep=max_to_keep)
        self._reader_manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(directory, "checkpoints"), max_to_keep=max_to_keep)

    def restore_latest(self):
        """Restores the newest checkpoint if there is one; returns the epoch to start from."""
        path = self._reader_manager.latest_checkpoint
        if not path:
            return 0
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def save(self, epoch):
        self.epoch.assign(epoch)
        self.manager.save(checkpoint_number=epoch)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a PhaseCheckpoint after every epoch and logs progress to progress.jsonl."""

    def __init__(self, phase_checkpoint, initial_epoch):
        super().__init__()
        self.phase_checkpoint = phase_checkpoint
        self.initial_epoch = initial_epoch
        self.path = os.path.join(phase_checkpoint.directory, "progress.jsonl")

    def _log(self, event, epoch, logs=None):
        if not strategies.is_chief(self.phase_checkpoint.strategy):
            return
        record = {"event": event, "epoch": int(epoch), "time": time.time(),
                  "optimizer_iterations": int(self.model.optimizer.iterations.numpy())}
        if logs:
            record.update({k: float(v) for k, v in logs.items()})
        append_progress(self.path, record)

    def on_train_begin(self, logs=None):
        self._log("start", self.initial_epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.phase_checkpoint.save(epoch + 1)
        self._log("epoch_end", epoch + 1, logs)


def append_progress(path, record):
    """Appends `record` as a JSON line, first dropping a partial last line left by a kill.

    Without the repair, the new record would be glued to the fragment and both lost.
    """
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
        f.write(json.dumps(record).encode() + b"\n")


def read_progress(phase_dir):
    """The records of progress.jsonl (empty list if there is none).

    A last line cut short by a kill is skipped; a malformed line anywhere else raises ValueError.
    """
    path = os.path.join(phase_dir, "progress.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: an append that a kill interrupted
                break
            raise ValueError(f"{path}: line {number} is not a JSON record ({error}). "
                             f"Received: {line[:80]!r}") from error
    return records
