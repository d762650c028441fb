"""Epoch checkpoints that a killed run resumes from with nothing lost, or stops on if damaged.

`EpochCheckpoint` saves {model, optimizer, epoch} with a `tf.train.CheckpointManager` at the end of
every epoch (all variables: weights, batch-norm statistics, pruning masks and step, optimizer
slots and iteration count) as `checkpoints/ckpt-<epoch>`. `restore_latest` is called before
`fit`; training then continues with `initial_epoch` set to the restored epoch. Each invocation
appends a line to `progress.jsonl` (epoch and optimizer iterations at start and at every epoch
end), which is how a run (and the tests) can see that it resumed. A kill can cut the last line of
that file short: the next append drops the fragment, and `read_progress` skips it.

A run directory that cannot be resumed exactly is never trained over from scratch:
`restore_latest` raises a `CheckpointError` naming the file and the two ways on (resume from the
previous epoch's checkpoint with `python -m tf_sparse_winograd.training.checkpointing rewind`, or
delete the phase directory) when the checkpoint state file is unreadable, names a checkpoint that
is missing or does not restore, or when checkpoints and progress.jsonl disagree: a checkpoint
missing for an epoch the progress records (or the reverse), or another optimizer step count.
(TensorFlow's own CheckpointManager ignores an unreadable state file, and would start over.)
"""

import argparse
import glob
import json
import os
import re
import shutil
import sys
import time

import keras
import tensorflow as tf
from google.protobuf import text_format

from tf_sparse_winograd.training import strategies

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "checkpoint"  # the CheckpointManager's state file in CHECKPOINT_DIR
PROGRESS_FILE = "progress.jsonl"
_PREFIX = "ckpt"


class CheckpointError(RuntimeError):
    """A phase directory whose checkpoints cannot be resumed from as they are."""


class PhaseCheckpoint:
    """Owns the checkpoint of one phase: a CheckpointManager over model, optimizer and epoch."""

    def __init__(self, directory, model, optimizer, strategy, max_to_keep=2):
        self.directory = directory
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.max_to_keep = max_to_keep
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch)
        self._manager = None

    @property
    def manager(self):
        """The CheckpointManager that writes (created after restore_latest checked the state)."""
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint,
                strategies.write_dir(os.path.join(self.directory, CHECKPOINT_DIR), self.strategy),
                max_to_keep=self.max_to_keep, checkpoint_name=_PREFIX)
        return self._manager

    def restore_latest(self):
        """Restores the newest checkpoint if there is one; returns the epoch to start from.

        Raises:
          CheckpointError: the phase directory cannot be resumed as it is (see the module
            docstring); the message names the file and how to go on.
        """
        checkpoints = os.path.join(self.directory, CHECKPOINT_DIR)
        logged = _last_logged_epoch(self.directory)
        path = state_checkpoint(self.directory)
        if path is None:
            found = checkpoint_epochs(self.directory)
            if found or (logged is not None and logged[0] > 0):
                what = (f"checkpoints {', '.join(f'{_PREFIX}-{e}' for e in found)} exist"
                        if found else f"{PROGRESS_FILE} records the end of epoch {logged[0]}")
                raise self._error(f"{os.path.join(checkpoints, STATE_FILE)} is missing, but {what}",
                                  None)
            return 0
        number = _epoch_of(path)
        if number is None or not os.path.exists(path + ".index"):
            raise self._error(f"{os.path.join(checkpoints, STATE_FILE)} names the checkpoint "
                              f"{path}, whose index file {path}.index does not exist",
                              newest_usable=None if number is None else number - 1)
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as error:  # pylint: disable=broad-except
            # Any: TensorFlow's reader raises OpErrors, ValueError, AssertionError (objects not
            # matched), IndexError (a truncated file: "Read less bytes than requested"), ...
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise self._error(f"the checkpoint {path} (files {path}.index, "
                              f"{path}.data-*) cannot be restored: {type(error).__name__}: "
                              f"{first_line[:400]}", newest_usable=number - 1) from error
        epoch = int(self.epoch.numpy())
        iterations = int(self.optimizer.iterations.numpy())
        if epoch != number:
            raise self._error(f"the checkpoint {path} holds epoch {epoch}, not {number}",
                              newest_usable=number - 1)
        progress = os.path.join(self.directory, PROGRESS_FILE)
        logged_epoch, logged_iterations = logged if logged is not None else (0, None)
        if logged_epoch > epoch:
            raise self._error(f"{progress} records the end of epoch {logged_epoch}, but the "
                              f"newest checkpoint, {path}, is of epoch {epoch}",
                              newest_usable=epoch)
        if logged_epoch < epoch - 1:
            # The checkpoint of an epoch is written just before its progress record, so a kill
            # can leave the record of the last epoch missing, never more.
            raise self._error(f"the checkpoint {path} is of epoch {epoch}, but {progress} "
                              f"records the end of epoch {logged_epoch} only", newest_usable=epoch)
        if logged_epoch == epoch and logged_iterations not in (None, iterations):
            raise self._error(f"{progress} records {logged_iterations} optimizer steps at the end "
                              f"of epoch {epoch}, but the checkpoint {path} holds {iterations}",
                              newest_usable=epoch)
        return epoch

    def _error(self, problem, newest_usable):
        """A CheckpointError saying what is wrong and how to go on: from the newest checkpoint
        of an epoch <= `newest_usable` (None: any), or from scratch."""
        usable = [e for e in checkpoint_epochs(self.directory)
                  if newest_usable is None or e <= newest_usable]
        ways = []
        if usable:
            ways.append(f"to continue from the checkpoint of epoch {usable[-1]} "
                        f"({_PREFIX}-{usable[-1]}), run `{sys.executable} -m "
                        f"tf_sparse_winograd.training.checkpointing rewind {self.directory} "
                        f"{usable[-1]}` and rerun the same command")
        ways.append(f"to start this phase over, delete {self.directory} and rerun")
        return CheckpointError(_message(self.directory, problem, ways))

    def save(self, epoch):
        self.epoch.assign(epoch)
        self.manager.save(checkpoint_number=epoch)


def checkpoint_epochs(phase_dir):
    """Epochs of the checkpoints in a phase directory that have an index file, ascending."""
    pattern = os.path.join(phase_dir, CHECKPOINT_DIR, f"{_PREFIX}-*.index")
    epochs = (_epoch_of(path[:-len(".index")]) for path in glob.glob(pattern))
    return sorted(e for e in epochs if e is not None)


def _epoch_of(path):
    match = re.fullmatch(rf"{_PREFIX}-(\d+)", os.path.basename(path))
    return int(match.group(1)) if match else None


def state_checkpoint(phase_dir):
    """The checkpoint path the state file names, or None without a state file.

    Raises CheckpointError if the state file cannot be read or names no checkpoint.
    """
    checkpoints = os.path.join(phase_dir, CHECKPOINT_DIR)
    state_path = os.path.join(checkpoints, STATE_FILE)
    if not os.path.exists(state_path):
        return None
    from tensorflow.python.checkpoint import checkpoint_management  # pylint: disable=import-outside-toplevel
    state = checkpoint_management.CheckpointState()
    try:
        with open(state_path, encoding="utf-8") as f:
            text_format.Parse(f.read(), state)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        problem = f"its checkpoint state file {state_path} cannot be read ({error})"
    else:
        if state.model_checkpoint_path:
            path = state.model_checkpoint_path
            return path if os.path.isabs(path) else os.path.join(checkpoints, path)
        problem = f"its checkpoint state file {state_path} names no checkpoint"
    found = checkpoint_epochs(phase_dir)
    ways = [f"to continue from the checkpoint of epoch {found[-1]}, run `{sys.executable} -m "
            f"tf_sparse_winograd.training.checkpointing rewind {phase_dir} {found[-1]}` and rerun "
            "the same command"] if found else []
    ways.append(f"to start this phase over, delete {phase_dir} and rerun")
    raise CheckpointError(_message(phase_dir, problem, ways))


def _message(phase_dir, problem, ways):
    text = "; or ".join(ways)
    return (f"Cannot resume the training phase in {phase_dir}: {problem}. No checkpoint or "
            f"progress record was changed. {text[:1].upper()}{text[1:]}.")


def _last_logged_epoch(phase_dir):
    """(epoch, optimizer iterations or None) of the last epoch end or rewind in progress.jsonl,
    None if it records none. A malformed record raises CheckpointError."""
    try:
        records = read_progress(phase_dir)
    except ValueError as error:
        raise CheckpointError(
            f"Cannot resume the training phase in {phase_dir}: {error}. No checkpoint or progress "
            f"record was changed. Repair or delete that line and rerun the same command; or, to "
            f"start this phase over, delete {phase_dir} and rerun.") from error
    ends = [r for r in records if r.get("event") in ("epoch_end", "rewind")]
    if not ends:
        return None
    return int(ends[-1]["epoch"]), ends[-1].get("optimizer_iterations")


def rewind(phase_dir, epoch):
    """Makes a phase resume from its checkpoint of `epoch`: the later checkpoints are moved to
    checkpoints/rewound-<time>/ (not deleted), the state file names ckpt-<epoch>, and
    progress.jsonl records the rewind. Returns the directory the later checkpoints went to."""
    checkpoints = os.path.join(phase_dir, CHECKPOINT_DIR)
    found = checkpoint_epochs(phase_dir)
    if epoch not in found:
        raise CheckpointError(f"{checkpoints} has no checkpoint of epoch {epoch}. Received: "
                              f"epoch={epoch}; it has: {found or 'none'}")
    aside = os.path.join(checkpoints, f"rewound-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(aside, exist_ok=True)
    for name in os.listdir(checkpoints):
        number = _epoch_of(name.split(".")[0])
        if name == STATE_FILE or (number is not None and number > epoch):
            shutil.move(os.path.join(checkpoints, name), os.path.join(aside, name))
    kept = [f"{_PREFIX}-{e}" for e in found if e <= epoch]
    with open(os.path.join(checkpoints, STATE_FILE), "w", encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "{kept[-1]}"\n')
        f.writelines(f'all_model_checkpoint_paths: "{path}"\n' for path in kept)
    append_progress(os.path.join(phase_dir, PROGRESS_FILE),
                    {"event": "rewind", "epoch": int(epoch), "time": time.time()})
    return aside


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a PhaseCheckpoint after every epoch and logs progress to progress.jsonl."""

    def __init__(self, phase_checkpoint, initial_epoch):
        super().__init__()
        self.phase_checkpoint = phase_checkpoint
        self.initial_epoch = initial_epoch
        self.path = os.path.join(phase_checkpoint.directory, PROGRESS_FILE)

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
        strategies.sync_batch_norm_statistics(self.model, self.phase_checkpoint.strategy)
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
    path = os.path.join(phase_dir, PROGRESS_FILE)
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


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Repairs a run directory that train.py refused to resume.")
    commands = parser.add_subparsers(dest="command", required=True)
    rewind_parser = commands.add_parser(
        "rewind", help="resume a phase from an earlier epoch's checkpoint (later checkpoints are "
                       "moved aside, not deleted)")
    rewind_parser.add_argument("phase_dir", help="the phase directory, e.g. <model_dir>/dense")
    rewind_parser.add_argument("epoch", type=int, help="the epoch whose checkpoint to resume from")
    args = parser.parse_args(argv)
    try:
        aside = rewind(args.phase_dir, args.epoch)
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    print(f"{args.phase_dir} now resumes from epoch {args.epoch}; the later checkpoints are in "
          f"{aside}.")


if __name__ == "__main__":
    main()
