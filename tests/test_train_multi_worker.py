"""Two workers on 127.0.0.1 (MultiWorkerMirroredStrategy from TF_CONFIG, train.py's
--strategy=multi_worker): both hold the same weights, batch-norm statistics and masks after the
dense and retraining phases; a worker killed in the middle of a retraining epoch loses nothing
once the job is run again: it resumes from the last epoch checkpoint.

docs/training.md says how to run the same on several machines.
"""

import json
import os
import signal
import socket
import time

import numpy as np
import pytest

import support
from tf_sparse_winograd import training

EXAMPLES, BATCH = 256, 16
STEPS_PER_EPOCH = EXAMPLES // BATCH  # global steps: each worker runs half of every batch
DENSE_EPOCHS, RETRAIN_EPOCHS = 1, 3
JOB_SECONDS = 900

_WORKER = r"""
import sys
import numpy as np
from tf_sparse_winograd import training
from tf_sparse_winograd.training import config as config_lib

model_dir, idx, out = sys.argv[1], sys.argv[2], sys.argv[3]
config = training.TrainConfig(
    width=0.0625, batch_size=%(batch)d, max_train_examples=%(examples)d, max_eval_examples=32,
    analysis_batches=0, verbose=0, epochs=(%(dense)d, %(retrain)d), learning_rate=0.02,
    conv_type="winograd_relu", density=(0.4,), data_source="idx", data_dir=idx,
    model_dir=model_dir, phase="all", strategy="multi_worker")
runner = training.Runner(config)
assert runner.strategy.num_replicas_in_sync == 2, runner.strategy.num_replicas_in_sync
for phase in config_lib.PHASES:
    runner.run_phase(phase)
    model = runner.models.get(phase)
    if model is not None:  # trained (or pruned) in this process: what this worker holds
        arrays = {v.path: np.asarray(v.numpy()) for v in model.variables}
        if phase != "prune":
            arrays["optimizer/iterations"] = np.asarray(model.optimizer.iterations.numpy())
        np.savez(f"{out}_{phase}.npz", **arrays)
""" % dict(batch=BATCH, examples=EXAMPLES, dense=DENSE_EPOCHS, retrain=RETRAIN_EPOCHS)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_job(tmp_path, job, run, idx):
    """Starts the two workers of a job; returns their Popens (worker 0 is the chief)."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tmp = tmp_path / f"tmp{index}"  # where a non-chief worker writes its checkpoint copies
        tmp.mkdir(exist_ok=True)
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(support.start_python(
            _WORKER, run, idx, tmp_path / f"{job}_worker{index}",
            log=tmp_path / f"{job}_worker{index}.log", cwd=support.REPO,
            env={"TF_CONFIG": json.dumps(config), "TMPDIR": tmp, "TF_CPP_MIN_LOG_LEVEL": "2"}))
    return procs


def _log_tail(tmp_path, job):
    return "\n".join(f"--- worker {i}:\n" + (tmp_path / f"{job}_worker{i}.log").read_text()[-3000:]
                     for i in range(2))


def _wait(procs, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.2)
    return [p.poll() for p in procs]


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=60)


def _epoch_ends(phase_dir):
    """Epochs whose end progress.jsonl records (read as text: a line may be half-written)."""
    path = os.path.join(phase_dir, "progress.jsonl")
    if not os.path.exists(path):
        return []
    ends = []
    with open(path) as f:
        for line in f:
            if '"event": "epoch_end"' in line and line.endswith("\n"):
                ends.append(json.loads(line)["epoch"])
    return ends


def _assert_same_variables(tmp_path, job, phase):
    first, second = (dict(np.load(tmp_path / f"{job}_worker{i}_{phase}.npz")) for i in range(2))
    assert sorted(first) == sorted(second)
    differ = [name for name in first if not np.array_equal(first[name], second[name])]
    assert not differ, f"{phase}: the workers hold different {differ}"
    return first


@pytest.mark.slow
def test_two_workers_agree_and_a_killed_worker_loses_nothing(tmp_path):
    idx = support.write_fashion_idx(str(tmp_path / "idx"), n_train=EXAMPLES, n_test=32)
    run = str(tmp_path / "run")
    retrain = os.path.join(run, "retrain_d0.4")

    # Job 1: dense training and pruning complete; worker 1 is killed during retraining epoch 2.
    procs = _start_job(tmp_path, "job1", run, idx)
    try:
        deadline = time.time() + JOB_SECONDS
        while (1 not in _epoch_ends(retrain) and all(p.poll() is None for p in procs)
               and time.time() < deadline):
            time.sleep(0.05)
        assert 1 in _epoch_ends(retrain), "no retraining epoch ended:\n" + _log_tail(tmp_path,
                                                                                     "job1")
        procs[1].send_signal(signal.SIGKILL)
        # The chief's next collective fails once the dead peer misses its heartbeats
        # (UnavailableError, seen after ~10 s); not waited for beyond 60 s.
        (chief_code,) = _wait(procs[:1], 60)
    finally:
        _kill(procs)
    assert chief_code in (None, 1), chief_code
    assert not os.path.exists(os.path.join(retrain, "results.json")), "job 1 finished"
    killed_after = max(_epoch_ends(retrain))
    assert 1 <= killed_after < RETRAIN_EPOCHS
    dense = _assert_same_variables(tmp_path, "job1", "dense")
    assert dense["optimizer/iterations"] == DENSE_EPOCHS * STEPS_PER_EPOCH
    assert any("moving_mean" in name for name in dense)  # batch-norm statistics compared too
    _assert_same_variables(tmp_path, "job1", "prune")

    # Job 2: the same command; dense and prune are complete, retraining resumes.
    procs = _start_job(tmp_path, "job2", run, idx)
    try:
        codes = _wait(procs, JOB_SECONDS)
    finally:
        _kill(procs)
    assert codes == [0, 0], f"job 2 ended with {codes}:\n" + _log_tail(tmp_path, "job2")
    for i in range(2):  # dense and prune were skipped: no worker ran them again
        assert not (tmp_path / f"job2_worker{i}_dense.npz").exists()
        assert not (tmp_path / f"job2_worker{i}_prune.npz").exists()
    retrained = _assert_same_variables(tmp_path, "job2", "retrain")
    masks = [name for name in retrained if name.endswith("_mask")]
    assert len(masks) == 7, masks  # every conv but the first
    assert retrained["optimizer/iterations"] == RETRAIN_EPOCHS * STEPS_PER_EPOCH

    progress = training.read_progress(retrain)
    starts = [r for r in progress if r["event"] == "start"]
    assert len(starts) == 2
    resumed = starts[1]
    # From the last checkpoint: the epoch whose end job 1 recorded last (or the one after, if
    # the kill fell between a checkpoint and its record), with the optimizer's step count.
    assert resumed["epoch"] in (killed_after, killed_after + 1)
    assert resumed["optimizer_iterations"] == resumed["epoch"] * STEPS_PER_EPOCH
    after = [r["epoch"] for r in progress[progress.index(resumed) + 1:]
             if r["event"] == "epoch_end"]
    assert after == list(range(resumed["epoch"] + 1, RETRAIN_EPOCHS + 1))
    with open(os.path.join(retrain, "results.json")) as f:
        pruned = [row for row in json.load(f)["sparsity"] if row["pruned"]]
    assert len(pruned) == 7 and all(abs(row["density"] - 0.4) < 0.01 for row in pruned), pruned
