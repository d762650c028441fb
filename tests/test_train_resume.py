"""Killing train.py mid-phase and rerunning it continues from the last epoch checkpoint."""

import json
import os
import signal
import time

import pytest

from tf_sparse_winograd import training
import support

pytestmark = pytest.mark.slow  # Trains with train.py in subprocesses.

EPOCHS = 3
STEPS_PER_EPOCH = 4  # 64 examples / batch 16.


def _logged_an_epoch_end(phase_dir):
    """Whether progress.jsonl has an epoch_end record (read as text: a line may be half-written)."""
    path = os.path.join(phase_dir, "progress.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return '"event": "epoch_end"' in f.read()


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    idx = support.write_fashion_idx(str(tmp_path / "idx"), n_train=64, n_test=32)
    model_dir = str(tmp_path / "run")
    args = support.TINY_TRAIN_FLAGS + [
        f"--data_dir={idx}", "--data_source=idx", f"--model_dir={model_dir}", "--phase=dense",
        "--conv_type=winograd", f"--epochs={EPOCHS}", "--max_train_examples=64", "--analysis_batches=0"]
    dense = os.path.join(model_dir, "dense")
    index = os.path.join(dense, "checkpoints", "checkpoint")
    log = open(tmp_path / "first_run.log", "w")
    proc = support.start_train(args, log)
    try:
        deadline = time.time() + 400
        # The epoch's checkpoint is written before its progress record: wait for both, or the
        # kill can land between them (seen once in CI).
        while (not (os.path.exists(index) and _logged_an_epoch_end(dense))
               and proc.poll() is None and time.time() < deadline):
            time.sleep(0.05)
        assert os.path.exists(index), "no checkpoint appeared: " + open(tmp_path / "first_run.log").read()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert not os.path.exists(os.path.join(dense, "results.json")), "the run finished before the kill"
    first = training.read_progress(dense)
    done = max(r["epoch"] for r in first if r["event"] == "epoch_end")
    assert 1 <= done < EPOCHS

    out = support.run_train(args).stdout
    assert "resuming from the checkpoint of epoch" in out
    progress = training.read_progress(dense)
    starts = [r for r in progress if r["event"] == "start"]
    assert len(starts) == 2
    # The second run started where a checkpoint left off, with the optimizer's step count intact.
    resumed = starts[1]
    assert resumed["epoch"] >= done
    assert resumed["optimizer_iterations"] == resumed["epoch"] * STEPS_PER_EPOCH
    ends = [r for r in progress if r["event"] == "epoch_end"]
    assert ends[-1]["epoch"] == EPOCHS
    assert ends[-1]["optimizer_iterations"] == EPOCHS * STEPS_PER_EPOCH
    # Every epoch after the resume point ran exactly once in the second run.
    second = [r["epoch"] for r in progress[progress.index(resumed) + 1:] if r["event"] == "epoch_end"]
    assert second == list(range(resumed["epoch"] + 1, EPOCHS + 1))
    with open(os.path.join(dense, "results.json")) as f:
        assert json.load(f)["epochs"] == EPOCHS
