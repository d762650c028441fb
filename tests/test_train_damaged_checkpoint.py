"""A run directory whose checkpoint is damaged, or disagrees with progress.jsonl, stops train.py
with a message naming the file and the ways on; it is never trained over from scratch.

One dense phase of 2 epochs is trained once (train.py, a subprocess); each case copies its
directory, damages it, removes results.json (so that the phase is not complete: a run killed
during epoch 3 of 3) and runs the phase again in this process.
"""

import os
import shutil

import pytest

from tf_sparse_winograd import training
from tf_sparse_winograd.training import checkpointing
from tf_sparse_winograd.training import testing as th

pytestmark = pytest.mark.slow  # trains a phase, then resumes it a dozen times: minutes

EPOCHS = 3
FLAGS = dict(width=0.0625, batch_size=16, max_train_examples=64, max_eval_examples=32,
             analysis_batches=0, verbose=0, learning_rate=0.02, conv_type="winograd",
             data_source="idx", phase="dense")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(idx directory, a run directory whose dense phase ran 2 epochs)."""
    root = tmp_path_factory.mktemp("damaged")
    idx = th.write_fashion_idx(str(root / "idx"), n_train=64, n_test=32)
    run = str(root / "run")
    th.run_train(th.TINY_FLAGS + [f"--data_dir={idx}", "--data_source=idx", f"--model_dir={run}",
                                  "--phase=dense", "--conv_type=winograd", "--epochs=2",
                                  "--analysis_batches=0"])
    assert checkpointing.checkpoint_epochs(os.path.join(run, "dense")) == [1, 2]
    return idx, run


def _copy(trained, tmp_path):
    """A copy of the run whose dense phase is not complete, and its dense directory."""
    run = str(tmp_path / "run")
    shutil.copytree(trained[1], run)
    dense = os.path.join(run, "dense")
    os.remove(os.path.join(dense, "results.json"))
    return run, dense


def _config(trained, run):
    return training.TrainConfig(**FLAGS, data_dir=trained[0], model_dir=run, epochs=(EPOCHS,))


def _snapshot(dense):
    """The bytes of every checkpoint file and of progress.jsonl."""
    files = {}
    for root, _, names in os.walk(dense):
        for name in names:
            path = os.path.join(root, name)
            if "checkpoints" in path or name == "progress.jsonl":
                with open(path, "rb") as f:
                    files[os.path.relpath(path, dense)] = f.read()
    return files


def _ckpt(dense, epoch, suffix):
    return os.path.join(dense, "checkpoints", f"ckpt-{epoch}{suffix}")


def _truncate(path, fraction=0.5):
    with open(path, "r+b") as f:
        f.truncate(int(f.seek(0, os.SEEK_END) * fraction))


def _flip_bytes(path):
    with open(path, "r+b") as f:
        middle = f.seek(0, os.SEEK_END) // 2
        f.seek(middle)
        chunk = f.read(256)
        f.seek(middle)
        f.write(bytes(b ^ 0xA5 for b in chunk))


def _append(dense, record):
    checkpointing.append_progress(os.path.join(dense, "progress.jsonl"), record)


def _rewrite_last_epoch_end(dense, **changes):
    path = os.path.join(dense, "progress.jsonl")
    records = training.read_progress(dense)
    last = max(i for i, r in enumerate(records) if r["event"] == "epoch_end")
    records[last].update(changes)
    os.remove(path)
    for record in records:
        checkpointing.append_progress(path, record)


# Each case: (damage(dense), what the message must name, the epoch whose checkpoint the
# message offers to rewind to (None: no rewind, only starting over)).
CASES = {
    "data file truncated": (lambda d: _truncate(_ckpt(d, 2, ".data-00000-of-00001")),
                            "ckpt-2", 1),
    "data file bytes flipped": (lambda d: _flip_bytes(_ckpt(d, 2, ".data-00000-of-00001")),
                                "ckpt-2", 1),
    "data file empty": (lambda d: _truncate(_ckpt(d, 2, ".data-00000-of-00001"), 0.0),
                        "ckpt-2", 1),
    "index file truncated": (lambda d: _truncate(_ckpt(d, 2, ".index")), "ckpt-2", 1),
    "index file missing": (lambda d: os.remove(_ckpt(d, 2, ".index")), "ckpt-2.index", 1),
    "state file garbage": (lambda d: _write(d, "checkpoints/checkpoint",
                                            'model_checkpoint_path: "ckpt-2\n\x01garbage {'),
                           "checkpoints/checkpoint", 2),
    "state file empty": (lambda d: _write(d, "checkpoints/checkpoint", ""),
                         "checkpoints/checkpoint", 2),
    "state file missing": (lambda d: os.remove(os.path.join(d, "checkpoints", "checkpoint")),
                           "checkpoints/checkpoint", 2),
    "progress records a later epoch": (
        lambda d: _append(d, {"event": "epoch_end", "epoch": 3, "optimizer_iterations": 12}),
        "progress.jsonl", 2),
    "progress records another step count": (
        lambda d: _rewrite_last_epoch_end(d, optimizer_iterations=5), "progress.jsonl", 2),
    "progress lost its records": (lambda d: os.remove(os.path.join(d, "progress.jsonl")),
                                  "progress.jsonl", 2),
    "progress line malformed": (lambda d: _write(d, "progress.jsonl", "{not json\n", "a"),
                                "progress.jsonl", None),
}


def _write(dense, name, text, mode="w"):
    with open(os.path.join(dense, name), mode, encoding="utf-8") as f:
        f.write(text)


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_run_directory_stops_with_the_way_out(trained, tmp_path, case):
    damage, names, rewind_to = CASES[case]
    run, dense = _copy(trained, tmp_path)
    damage(dense)
    before = _snapshot(dense)
    with pytest.raises(training.CheckpointError) as info:
        training.run(_config(trained, run))
    message = str(info.value)
    assert names in message, message
    assert f"delete {dense}" in message, message
    if rewind_to is None:
        assert "rewind" not in message, message
    else:
        assert f"rewind {dense} {rewind_to}`" in message, message
    assert _snapshot(dense) == before, "the damaged directory was changed"
    assert not os.path.exists(os.path.join(dense, "results.json"))


def test_rewind_resumes_from_the_previous_epoch_and_train_py_names_the_file(trained, tmp_path):
    run, dense = _copy(trained, tmp_path)
    _truncate(_ckpt(dense, 2, ".data-00000-of-00001"))
    args = th.TINY_FLAGS + [f"--data_dir={trained[0]}", "--data_source=idx",
                            f"--model_dir={run}", "--phase=dense", "--conv_type=winograd",
                            f"--epochs={EPOCHS}", "--analysis_batches=0"]
    failed = th.run_train(args, check=False)
    assert failed.returncode != 0
    assert "train.py: Cannot resume the training phase" in failed.stdout
    assert "ckpt-2" in failed.stdout and "Traceback" not in failed.stdout, failed.stdout[-3000:]
    # The way out the message offers: rewind to epoch 1, rerun.
    checkpointing.main(["rewind", dense, "1"])
    assert checkpointing.checkpoint_epochs(dense) == [1]
    out = th.run_train(args).stdout
    assert "resuming from the checkpoint of epoch 1" in out
    progress = training.read_progress(dense)
    assert [r["event"] for r in progress].count("rewind") == 1
    resumed = [r for r in progress if r["event"] == "start"][-1]
    assert resumed["epoch"] == 1 and resumed["optimizer_iterations"] == 4
    ends = [r["epoch"] for r in progress[progress.index(resumed):] if r["event"] == "epoch_end"]
    assert ends == [2, 3]
    assert os.path.exists(os.path.join(dense, "results.json"))


def test_rewind_refuses_an_epoch_without_checkpoint(trained, tmp_path):
    _, dense = _copy(trained, tmp_path)
    with pytest.raises(checkpointing.CheckpointError, match=r"no checkpoint of epoch 7"):
        checkpointing.rewind(dense, 7)


def test_an_intact_directory_resumes(trained, tmp_path):
    """The checks pass on an intact directory, also after a kill between a checkpoint and its
    progress record (the record of the last epoch missing)."""
    run, dense = _copy(trained, tmp_path)
    records = training.read_progress(dense)
    path = os.path.join(dense, "progress.jsonl")
    os.remove(path)
    for record in records[:-1]:  # the epoch 2 record, the last, dropped
        checkpointing.append_progress(path, record)
    results = training.run(_config(trained, run))
    assert results["dense"]["epochs"] == EPOCHS
    starts = [r for r in training.read_progress(dense) if r["event"] == "start"]
    assert starts[-1]["epoch"] == 2 and starts[-1]["optimizer_iterations"] == 8
