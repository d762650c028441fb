"""Speed of the sparse FC op (SparseWinograd>SparseDense) against TF's dense matmul, in one run.

    python bench/fc_speed.py [--shape 4096,1024] [--batches 1,32] [--densities 1.0,0.4,0.1]
                             [--reps 7]

The layer: y = relu(x W + b), VGG-nagadomi's fc1 (4096 -> 1024) by default, W pruned at random
to each density. TF's side: tf.matmul + bias + relu with W a tf.constant inside the tf.function
(oneDNN). Ours: `ops.sparse_dense_matmul` on the CSR constants (int16 indices) with the ReLU
fused. Each sample runs 20 calls chained in one graph (each call's input depends on the last
call's output through a zero-weighted scalar, so the calls neither overlap nor get folded away);
intra-op threads 2, inter-op 1; the two sides are timed interleaved (bench/interleaved.py), and
the median sample is kept. Ratio = TF time / op time (> 1: ours faster).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from tf_sparse_winograd import ops  # pylint: disable=wrong-import-position
from interleaved import measure  # pylint: disable=wrong-import-position

CHAINED_CALLS = 20


def chained(layer):
    @tf.function
    def run(x):
        link = tf.zeros([])
        for _ in range(CHAINED_CALLS):
            link = 0.0 * layer(x + link)[0, 0]
        return link
    return run


def median_ms(functions, x, reps):
    """Median ms per call of each function, sampled interleaved (5 runs of the chain a sample)."""
    def sampler(fn):
        def sample():
            start = time.perf_counter()
            for _ in range(5):
                fn(x)
            return (time.perf_counter() - start) / 5 / CHAINED_CALLS * 1e3
        return sample
    for fn in functions.values():
        fn(x)
    results = measure([sampler(fn) for fn in functions.values()], reps)
    return {name: median for name, (_, median) in zip(functions, results)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4096,1024", help="in_features,units")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--densities", default="1.0,0.4,0.1")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    in_features, units = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    print(f"FC {in_features} -> {units}, TensorFlow {tf.__version__}, {CHAINED_CALLS} chained "
          f"calls per sample, median of {args.reps}\n")
    print("| density | batch | TF matmul ms | sparse op ms | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for density in (float(d) for d in args.densities.split(",")):
        kernel = (rng.normal(size=(in_features, units))
                  * (rng.random((in_features, units)) < density)).astype(np.float32)
        bias = tf.constant(rng.normal(size=units).astype(np.float32))
        dense_kernel = tf.constant(kernel)
        row_ptr, col_idx, values = (tf.constant(a) for a in ops.pack_dense_kernel(
            kernel, kernel_layout="unit_groups"))
        functions = {
            "dense": chained(lambda x: tf.nn.relu(tf.matmul(x, dense_kernel) + bias)),
            "sparse": chained(lambda x: ops.sparse_dense_matmul(
                x, row_ptr, col_idx, values, units, bias=bias, activation="relu",
                kernel_layout="unit_groups")),
        }
        for batch in (int(b) for b in args.batches.split(",")):
            x = tf.constant(rng.normal(size=(batch, in_features)).astype(np.float32))
            ms = median_ms(functions, x, args.reps)
            print(f"| {density} | {batch} | {ms['dense']:.3f} | {ms['sparse']:.3f} | "
                  f"{ms['dense'] / ms['sparse']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
