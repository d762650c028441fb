"""The ops read nothing from the environment: the variables that used to steer them (stage mask,
instruction set, work plan, FC gathers) set to hostile values change no bit of any result.

The ops run in two fresh interpreters, one with the variables and one without, both set before
TensorFlow starts; the outputs must be identical, and right (against a float64 reference).
Before the variables became attributes, TFSW_STAGE_MASK=0 alone left every conv output NaN here.
"""

import os
import re

import numpy as np
import pytest

import support
from tf_sparse_winograd import ops

# Every variable the ops read before issue 18, with a value that changed their results (or, for
# the work plan, their summation layout) then.
FORMER_VARIABLES = {
    "TFSW_STAGE_MASK": "0",          # nothing computed: the output stayed as allocated
    "TFSW_ISA": "generic",           # the portable kernel (no FMA: other rounding)
    "TFSW_TILE_VECTORS": "1",
    "TFSW_FILTER_BLOCK": "1",
    "TFSW_UNITS_PER_THREAD": "1000",
    "TFSW_DENSE_GATHER": "0",
}

_CHILD = r"""
import sys
import numpy as np
import tensorflow as tf
from tf_sparse_winograd import ops

rng = np.random.default_rng(0)
results = {"isa": np.array(ops.active_isa())}
for tile in (2, 4, 6):
    x = rng.standard_normal((3, 13, 11, 19)).astype(np.float32)
    u = rng.standard_normal((tile + 2, tile + 2, 19, 37)).astype(np.float32)
    u[rng.random(u.shape) < 0.6] = 0.0
    bias = rng.standard_normal(37).astype(np.float32)
    packed = ops.pack_kernel(u)
    results[f"conv{tile}_x"], results[f"conv{tile}_u"], results[f"conv{tile}_b"] = x, u, bias
    results[f"conv{tile}"] = ops.sparse_winograd_conv2d(
        x, packed, bias, tile_size=tile, debug_fill_nan=True).numpy()
    graph = tf.function(lambda x: ops.sparse_winograd_conv2d(x, packed, bias, tile_size=tile,
                                                             debug_fill_nan=True))
    results[f"conv{tile}_graph"] = graph(x).numpy()
kernel = rng.standard_normal((300, 70)).astype(np.float32)
kernel[rng.random(kernel.shape) < 0.7] = 0.0
packed = ops.pack_dense_kernel(kernel)
for batch in (1, 5):
    x = rng.standard_normal((batch, 300)).astype(np.float32)
    results[f"dense{batch}_x"] = x
    results[f"dense{batch}"] = ops.sparse_dense_matmul(x, *packed, 70,
                                                       debug_fill_nan=True).numpy()
results["kernel"] = kernel
np.savez(sys.argv[1], **results)
"""


def _run(tmp_path, name, env):
    out = tmp_path / f"{name}.npz"
    support.run_python(_CHILD, out, env=env)
    return dict(np.load(out))


def test_former_environment_variables_change_nothing(tmp_path):
    clean = _run(tmp_path, "clean", {name: None for name in FORMER_VARIABLES})
    hostile = _run(tmp_path, "hostile", FORMER_VARIABLES)
    assert str(clean["isa"]) == str(hostile["isa"]) == ops.cpu_isas()[-1]
    assert sorted(clean) == sorted(hostile)
    for key in clean:
        np.testing.assert_array_equal(hostile[key], clean[key], err_msg=key)
    # ... and the results are right: the float64 convolution, the float64 product.
    for tile in (2, 4, 6):
        x, u, b = (clean[f"conv{tile}_{s}"].astype(np.float64) for s in "xub")
        expected = _winograd_conv_float64(x, u, b, tile)
        bound = _winograd_conv_float64(np.abs(x), np.abs(u), np.abs(b), tile, absolute=True)
        assert np.all(np.abs(clean[f"conv{tile}"] - expected) <= 1e-5 * bound), tile
    for batch in (1, 5):
        x = clean[f"dense{batch}_x"].astype(np.float64)
        kernel = clean["kernel"].astype(np.float64)
        np.testing.assert_allclose(clean[f"dense{batch}"], x @ kernel, rtol=0,
                                   atol=1e-5 * (np.abs(x) @ np.abs(kernel)).max())


def _winograd_conv_float64(x, u, bias, tile, absolute=False):
    from test_op import numpy_winograd_conv2d  # pylint: disable=import-outside-toplevel
    return numpy_winograd_conv2d(x, u, bias, tile, "SAME", False, None, absolute=absolute)


def test_no_environment_read_in_the_op_sources():
    """The C++ sources call no getenv (the loader's TFSW_OP_LIBRARY, a path chosen before the
    library loads, is Python's)."""
    cc = os.path.join(os.path.dirname(ops.__file__), "cc")
    offenders = []
    for root, _, files in os.walk(cc):
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                for number, line in enumerate(f, start=1):
                    if re.search(r"\b(secure_)?getenv\b|\benviron\b", line):
                        offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_set_isa_forces_a_kernel_and_is_checked():
    available = ops.cpu_isas()
    assert available[0] == "generic" and set(available) <= {"generic", "avx2", "avx512"}
    previous = ops.set_isa("auto")
    try:
        assert ops.active_isa() == available[-1]  # the best one by default
        for isa in available:
            assert ops.set_isa(isa) in ("auto",) + available
            assert ops.active_isa() == isa
        for bad in ("sse4", "AVX512", "", 512):
            with pytest.raises(ValueError, match=r"`isa` must be one of .* Received: isa="):
                ops.set_isa(bad)
        assert ops.active_isa() == available[-1]  # unchanged by the rejected calls
        assert ops.set_isa(None) == available[-1]
        assert ops.active_isa() == available[-1]
    finally:
        ops.set_isa(previous)


def test_set_isa_names_the_cpus_instruction_sets_when_it_lacks_one(monkeypatch):
    """On a CPU without AVX-512 the library refuses it (tfsw_force_isa returns 2): the error names
    the argument and what the CPU has. Simulated: this machine may well have AVX-512."""
    from tf_sparse_winograd.ops import isa as isa_module  # pylint: disable=import-outside-toplevel

    class NoAvx512:
        @staticmethod
        def tfsw_force_isa(name):
            return 2 if name == b"avx512" else 0

        @staticmethod
        def tfsw_cpu_isas():
            return b"generic,avx2"

    monkeypatch.setattr(isa_module, "_functions", lambda: NoAvx512)
    with pytest.raises(ValueError, match=r"`isa` .* this CPU .*: generic, avx2\. "
                                         r"Received: isa='avx512'"):
        ops.set_isa("avx512")
