"""Fuzz test: thousands of malformed packed kernels and inputs must each be rejected with
InvalidArgument (or, for well-formed kernels with NaN/Inf weights, computed) and never crash.

The fuzzing runs in a subprocess, so that a segfault or an abort fails this test instead of
killing pytest; the subprocess reports a JSON summary of what it saw.
"""

import json
import textwrap

import pytest

import support

FUZZ_SCRIPT = textwrap.dedent(r'''
    import collections, json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    from tf_sparse_winograd import ops

    lib = ops.load_op_library()
    rng = np.random.default_rng(int(sys.argv[1]))
    iterations = int(sys.argv[2])
    counts = collections.Counter()
    unexpected = []

    def valid_case():
        m = int(rng.choice([2, 4, 6]))
        a = m + 2
        c, f = int(rng.integers(0, 9)), int(rng.integers(0, 9))
        n, h, w = int(rng.integers(0, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        u = rng.standard_normal((a, a, c, f)).astype(np.float32)
        u[rng.random(u.shape) < rng.random()] = 0.0
        rows = u.transpose(0, 1, 3, 2).reshape(a * a * f, c)
        counts_ = (rows != 0).sum(axis=1)
        row_ptr = np.concatenate([[0], np.cumsum(counts_)]).astype(np.int64)
        r, col = np.nonzero(rows)
        case = dict(input=rng.standard_normal((n, h, w, c)).astype(np.float32),
                    kernel_shape=np.array([a, c, f], np.int64), row_ptr=row_ptr,
                    col_idx=col.astype(np.int64), values=rows[r, col],
                    bias=rng.standard_normal(f).astype(np.float32) if rng.random() < 0.5
                    else np.zeros(0, np.float32))
        return m, case

    BIG = [2 ** 31 - 1, -2 ** 31, 2 ** 30, -1, 10 ** 9]

    def corrupt(case):
        """Applies one malformation; returns its name. Every one must be rejected."""
        kind = rng.integers(0, 19)
        rp, ci, vals, ks = case["row_ptr"], case["col_idx"], case["values"], case["kernel_shape"]
        if kind == 0 and rp.size > 1:
            i = rng.integers(1, rp.size)
            rp[i] = rp[i - 1] - rng.integers(1, 5)
            return "row_ptr decreasing"
        if kind == 1:
            rp[0] = rng.choice([1, -1, 5] + BIG)
            return "row_ptr[0] != 0"
        if kind == 2:
            rp[-1] += rng.choice([1, -1, 7] + BIG[:2])
            return "row_ptr[-1] != nnz"
        if kind == 3 and ci.size:
            ci[rng.integers(0, ci.size)] = rng.choice([-1, ks[1], ks[1] + 3] + BIG)
            return "col_idx out of range"
        if kind == 4:
            case["row_ptr"] = rp[:-1] if rng.random() < 0.5 else np.append(rp, rp[-1])
            return "row_ptr length"
        if kind == 5:
            case["values"] = np.append(vals, 1.0) if rng.random() < 0.5 or vals.size == 0 else vals[:-1]
            return "values length"
        if kind == 6:
            case["col_idx"] = np.append(ci, 0)
            return "col_idx length"
        if kind == 7:
            ks[0] = rng.choice([v for v in [0, 1, 3, 4, 5, 6, 7, 8, -4] + BIG if v != ks[0]])
            return "kernel_shape[0] != a"
        if kind == 8:
            ks[1] = ks[1] + rng.choice([1, -1, 100] + BIG)
            return "kernel_shape[1] != channels"
        if kind == 9:
            ks[2] = rng.choice([-1, -7] + BIG[1:2]) if rng.random() < 0.5 else ks[2] + rng.integers(1, 4)
            return "kernel_shape[2] wrong"
        if kind == 10:
            case["kernel_shape"] = np.append(ks, 1) if rng.random() < 0.5 else ks[:2]
            return "kernel_shape length"
        if kind == 11:
            name = ["kernel_shape", "row_ptr", "col_idx", "values", "bias"][rng.integers(0, 5)]
            case[name] = case[name].reshape(1, -1) if rng.random() < 0.5 else np.array(case[name].ravel()[:1].sum(), case[name].dtype)
            return "rank of " + name
        if kind == 12:
            shape = case["input"].shape
            case["input"] = (case["input"].reshape(shape[0], shape[1], shape[2] * shape[3])
                             if rng.random() < 0.5 else case["input"][None])
            return "input rank"
        if kind == 13:
            case["bias"] = np.zeros(ks[2] + rng.choice([1, 2, 5]), np.float32)
            return "bias length"
        if kind == 14 and rp.size > 2:
            i = rng.integers(1, rp.size - 1)
            rp[i] = rng.choice(BIG)
            return "row_ptr entry huge"
        if kind == 15:
            # VALID with an input too small for it is checked in fuzz_step via padding.
            return "valid too small"
        if kind == 16:
            rp[:] = rng.integers(-5, 5, rp.size)
            rp[0] = 0
            if np.all(np.diff(rp) >= 0) and rp[-1] == vals.size:
                rp[-1] += 1
            return "row_ptr random"
        if kind == 17 and ci.size:
            ci[:] = rng.integers(-3, ks[1] + 3, ci.size)
            if np.all((ci >= 0) & (ci < ks[1])):
                ci[0] = -1
            return "col_idx random"
        case["kernel_shape"] = np.array([ks[0], ks[1], ks[2] + rng.integers(1, 1000)])
        return "filters too many for row_ptr"

    def call(m, case, padding="SAME", products="auto"):
        return lib.sparse_winograd_conv2d(
            input=tf.constant(case["input"], tf.float32),
            kernel_shape=tf.constant(case["kernel_shape"], tf.int32),
            row_ptr=tf.constant(case["row_ptr"], tf.int32),
            col_idx=tf.constant(case["col_idx"], tf.int32),
            values=tf.constant(case["values"], tf.float32),
            bias=tf.constant(case["bias"], tf.float32),
            tile_size=m, padding=padding, debug_fill_nan=True, products=products)

    valid_ok = 0
    for it in range(iterations):
        m, case = valid_case()
        if it % 10 == 0:
            # Well-formed, possibly with NaN/Inf weights: must compute and not crash.
            if case["values"].size and rng.random() < 0.5:
                case["values"][rng.integers(0, case["values"].size)] = rng.choice([np.nan, np.inf, -np.inf])
            # Generated products and the CSR loop: NaN in the same places, elsewhere equal to
            # float32 rounding of sums in other orders (relative to the largest output: F(6x6)
            # sums terms far larger than their result).
            jit = call(m, case, products="jit").numpy()
            csr = call(m, case, products="csr").numpy()
            finite = np.isfinite(csr)
            scale = max(1.0, float(np.abs(csr[finite]).max())) if finite.any() else 1.0
            if not (np.array_equal(np.isnan(jit), np.isnan(csr))
                    and np.allclose(jit[finite], csr[finite], rtol=1e-4, atol=1e-5 * scale)):
                unexpected.append(
                    f"well-formed kernel: jit and csr differ (seed {sys.argv[1]}, iteration {it}, "
                    f"kernel_shape {case['kernel_shape'].tolist()}, input {case['input'].shape}, "
                    f"NaN in jit {int(np.isnan(jit).sum())}, csr {int(np.isnan(csr).sum())}, "
                    f"jit {jit.ravel()[:4].tolist()}, csr {csr.ravel()[:4].tolist()})")
            valid_ok += 1
            continue
        kind = corrupt(case)
        padding = "SAME"
        if kind == "valid too small":
            padding = "VALID"
            case["input"] = case["input"][:, :int(rng.integers(0, 2))]
        counts[kind] += 1
        try:
            call(m, case, padding, products=str(rng.choice(["auto", "csr", "jit"])))
        except tf.errors.InvalidArgumentError:
            continue
        except Exception as error:  # pylint: disable=broad-except
            unexpected.append(f"{kind}: {type(error).__name__}: {str(error)[:200]}")
            continue
        unexpected.append(f"{kind}: accepted")
    print("FUZZ_RESULT=" + json.dumps({"counts": counts, "valid_ok": valid_ok,
                                       "unexpected": unexpected[:20],
                                       "num_unexpected": len(unexpected)}))
''')


def run_fuzz(seed, iterations):
    """The fuzz loop in a fresh interpreter (a crash fails the check); returns its summary."""
    result = support.run_python(FUZZ_SCRIPT, seed, iterations, timeout=600)
    return json.loads(support.result_line(result, "FUZZ_RESULT="))


@pytest.mark.slow
def test_malformed_packed_kernels_are_rejected_and_never_crash():
    summary = run_fuzz(seed=12345, iterations=3000)
    assert summary["num_unexpected"] == 0, summary["unexpected"]
    assert sum(summary["counts"].values()) >= 2500
    assert len(summary["counts"]) >= 15, summary["counts"]  # every kind of malformation ran
    assert summary["valid_ok"] >= 250
