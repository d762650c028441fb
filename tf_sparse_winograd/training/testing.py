"""Helpers for testing training code: tiny budgets, generated IDX files, train.py subprocesses.

Used by the repository's tests (train.py lives at the repository root, next to the package).
"""

import os
import subprocess
import sys

import numpy as np

from tf_sparse_winograd import data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_PY = os.path.join(REPO, "train.py")

# A tiny network and budget: every run takes seconds.
TINY_FLAGS = ["--width=0.0625", "--batch_size=16", "--max_train_examples=64",
              "--max_eval_examples=32", "--analysis_batches=1", "--verbose=0", "--epochs=1,1",
              "--learning_rate=0.02"]


def write_fashion_idx(directory, n_train=96, n_test=48, seed=0):
    """Small Fashion-MNIST-like IDX files (gzip) whose label is learnable from the image."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):  # A bright bar whose row encodes the label.
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 250
        data.write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), images)
        data.write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), labels)
    return directory


def subprocess_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def run_train(args, timeout=600, check=True):
    """Runs train.py in a subprocess; returns the CompletedProcess (stdout+stderr as text)."""
    proc = subprocess.run([sys.executable, TRAIN_PY] + list(args), cwd=REPO, env=subprocess_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed ({proc.returncode}):\n"
                             + proc.stdout[-6000:])
    return proc
