"""What several test files share: fresh interpreters, train.py runs, generated IDX data,
the op's kernels forced one at a time.

Imported by the tests as `support` (pytest puts tests/ on sys.path); not part of the package.
"""

import gzip
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "train.py")
REPORT_PY = os.path.join(REPO, "report.py")

# A tiny network and budget for train.py: every run takes seconds.
TINY_TRAIN_FLAGS = ["--width=0.0625", "--batch_size=16", "--max_train_examples=64",
                    "--max_eval_examples=32", "--analysis_batches=1", "--verbose=0",
                    "--epochs=1,1", "--learning_rate=0.02"]


# The op's kernels, in the order ops.cpu_isas() lists them; a CPU runs a prefix of them.
ISAS = ("generic", "avx2", "avx512")


def use_isa(isa):
    """Forces the op's kernel of `isa` for the rest of the test (the conftest fixture
    isa_restored undoes it); skips the test if this CPU lacks the instruction set."""
    from tf_sparse_winograd import ops  # pylint: disable=import-outside-toplevel
    if isa not in ops.cpu_isas():
        pytest.skip(f"this CPU does not run the {isa} kernel")
    ops.set_isa(isa)


def fast_sample(cases, every):
    """`cases` as pytest params: every `every`-th in the fast tier, the others marked slow, so
    that `pytest -m "not slow"` still runs a spread of a large grid."""
    params = []
    for index, case in enumerate(cases):
        values = case if isinstance(case, tuple) else (case,)
        params.append(pytest.param(*values, marks=() if index % every == 0 else pytest.mark.slow))
    return params


def environment(env=None):
    """This process's environment for a child: TensorFlow's C++ logging silenced, plus `env`
    (a value None removes the variable)."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = str(value)
    return environment


def _run(command, env, cwd, timeout, check, merge_output=False, stdin=None):
    result = subprocess.run(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
                            input=stdin, text=True, timeout=timeout, env=environment(env),
                            cwd=cwd, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{command[1:3]} exited with {result.returncode}:\n"
                             f"{result.stdout[-6000:]}\n{result.stderr or ''}"[-9000:])
    return result


def run_python(code, *args, env=None, cwd=REPO, timeout=900, check=True, python=sys.executable,
               stdin=None):
    """Runs `code` (dedented) in a fresh interpreter, `args` as its sys.argv[1:] and `stdin` as
    its standard input; returns the CompletedProcess.

    With `check`, a non-zero exit (a crash included) fails the test and shows the end of the
    child's output.
    """
    return _run([python, "-c", textwrap.dedent(code), *map(str, args)], env, cwd, timeout, check,
                stdin=stdin)


def result_line(result, prefix):
    """The payload of the last stdout line starting with `prefix` (how children report)."""
    lines = [l for l in result.stdout.splitlines() if l.startswith(prefix)]
    assert lines, f"no {prefix!r} line in the child's output:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return lines[-1][len(prefix):]


def start_python(code, *args, log, env=None, cwd=REPO, python=sys.executable):
    """Starts `code` (dedented) in a fresh interpreter, as run_python does, without waiting; its
    stdout and stderr go to the file `log`. Returns the Popen (the caller waits for or kills it).
    """
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen([python, "-c", textwrap.dedent(code), *map(str, args)],
                                stdout=out, stderr=subprocess.STDOUT, env=environment(env),
                                cwd=cwd)


def run_script(path, *args, env=None, timeout=900, check=True):
    """Runs a script (train.py, report.py, a test's worker) with `args` from the repository;
    its stdout and stderr both in the CompletedProcess's `stdout`."""
    return _run([sys.executable, str(path), *map(str, args)], env, REPO, timeout, check,
                merge_output=True)


def run_train(args, env=None, timeout=900, check=True):
    """train.py with `args` (see run_script)."""
    return run_script(TRAIN_PY, *args, env=env, timeout=timeout, check=check)


def start_train(args, log):
    """train.py started in the background, its output going to the open file `log`."""
    return subprocess.Popen([sys.executable, TRAIN_PY, *map(str, args)], cwd=REPO,
                            env=environment(), stdout=log, stderr=subprocess.STDOUT)


_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def write_idx(path, array):
    """Writes an array as an IDX file (gzip if the path ends in .gz): magic, big-endian dims."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    payload = (struct.pack(">BBBB", 0, 0, _IDX_CODES[dtype], array.ndim)
               + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(dtype).tobytes())
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(payload)


def write_fashion_idx(directory, n_train=96, n_test=48, seed=0, compress=True):
    """Small Fashion-MNIST-like IDX files whose label is learnable from the image (a bright bar
    whose row encodes it); returns the directory."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 250
        write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte{suffix}"), images)
        write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte{suffix}"), labels)
    return directory
