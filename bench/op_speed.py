"""Speed of the SparseWinograd op against TF's conv2d, measured in one run.

    python bench/op_speed.py [--batches 1,32] [--densities 1.0,0.4,0.25,0.1] [--tiles 2,4]
                             [--reps 15] [--winograd_relu] [--filter_block 4]
                             [--products auto,csr] [--peak_gflops 234]

For each VGG-nagadomi conv layer shape: TF conv2d (oneDNN; the weights a tf.constant inside the
tf.function, so oneDNN caches the reordered filter) and our op (packed kernel as constants inside
a tf.function), both with intra-op threads = 2 and inter-op threads = 1, warmed up, timed
interleaved; each sample runs the convolution on 16 distinct inputs (64 at batch <= 4) as
separate nodes of one graph (so that the ~0.4 ms of an eager call's dispatch, the same for both
sides, is shared by all of them; see in_graph_calls), and the best and median sample are kept.
Ratio = TF time / op time (> 1: ours faster). Totals sum the times over the layers.
--products times the op once per products path (its `products` attribute: auto, csr, jit) in
the same interleaved rounds, one row each.

The sparse-products stage alone is timed with the benchmark build's SparseWinograd>Conv2DStages
op, run with stages=2 (products only) minus stages=0 (argument checks and dispatch); its useful
flops are 2 * nnz * tiles, reported as a fraction of the FP32 peak: --peak_gflops (measure it
with bench/fma_peak.cc), else 2 cores x 2 FMA units x the running kernel's float lanes (16 for
AVX-512, 8 for AVX2, 1 for the portable kernel) x 2 flops x the clock of /proc/cpuinfo (nominal;
on AMD Zen 4 one 512-bit FMA issues per cycle, not two, and Zen 1 splits each 256-bit FMA in
two). The package's library has no such op (it never computes a partial result); build the
benchmark library outside the package and point TFSW_OP_LIBRARY at it:

    python -m tf_sparse_winograd.ops.build --benchmark --output /tmp/tfsw_bench/ops.so
    TFSW_OP_LIBRARY=/tmp/tfsw_bench/ops.so python bench/op_speed.py

Without it (or with --no_stages) the products columns are left out.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from tf_sparse_winograd import ops  # pylint: disable=wrong-import-position
from interleaved import measure  # pylint: disable=wrong-import-position

LAYERS = [  # (H = W, in_channels, filters): VGG-nagadomi's conv shapes
    (32, 64, 64), (16, 64, 128), (16, 128, 128), (8, 128, 256), (8, 256, 256)]
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
# Convolutions per graph run (see in_graph_calls): enough to spread the run's dispatch thin,
# few enough that the distinct inputs stay a few hundred MB at batch 32.
SMALL_BATCH_CALLS, CALLS = 64, 16


def calls_per_run(batch):
    return SMALL_BATCH_CALLS if batch <= 4 else CALLS


def cpu_clock_ghz():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    return max(mhz) / 1000.0


FLOAT_LANES = {"avx512": 16, "avx2": 8, "generic": 1}


def peak_gflops():
    return THREADS * 2 * FLOAT_LANES[ops.active_isa()] * 2 * cpu_clock_ghz()


def time_fn(fn, x, min_seconds=0.02):
    """Runs of `fn` (an `in_graph_calls`) on the inputs `x` per sample, lasting ~min_seconds.

    Returns a sampler giving the time of one convolution.
    """
    fn(x).numpy()
    start = time.perf_counter()
    fn(x).numpy()
    once = time.perf_counter() - start
    runs = max(1, int(min_seconds / max(once, 1e-6)))

    def sample():
        start = time.perf_counter()
        for _ in range(runs):
            y = fn(x)
        y.numpy()
        return (time.perf_counter() - start) / (runs * len(x))
    return sample


def in_graph_calls(make_conv):
    """A tf.function running the convolution once on each of its inputs (a list), in one graph.

    `make_conv()` is called inside the function, so the weights it creates are constants of the
    graph. Timing one eager call per convolution would count 0.3-0.45 ms of Python and dispatch
    per call, as much as a whole batch-1 convolution; a tf.while_loop still costs ~60 us per
    iteration in TF's executor. Here the calls are separate nodes of one graph (distinct inputs,
    so none is merged with another; inter-op threads = 1 runs them one after the other), and the
    dispatch of the run is shared by all of them. Each input is fresh, as in a network, rather
    than the same tensor left in the cache by the previous call.
    """
    @tf.function
    def run(xs):
        conv = make_conv()
        return tf.add_n([conv(x)[0, 0, 0, 0] for x in xs])
    return run


def tf_conv(g):
    def make():
        kernel = tf.constant(g)
        return lambda x: tf.nn.conv2d(x, kernel, 1, "SAME")
    return in_graph_calls(make)


def our_conv(packed_np, tile_size, winograd_relu, stages=None, products="auto"):
    """The op, or with `stages` the benchmark build's op running only those stages."""
    def make():
        packed = ops.PackedKernel(*(tf.constant(t) for t in packed_np))
        if stages is None:
            return lambda x: ops.sparse_winograd_conv2d(x, packed, tile_size=tile_size,
                                                        winograd_relu=winograd_relu,
                                                        products=products)
        library = ops.load_op_library()
        bias = tf.zeros([0], tf.float32)
        return lambda x: library.sparse_winograd_conv2d_stages(
            input=x, kernel_shape=packed.shape, row_ptr=packed.row_ptr, col_idx=packed.col_idx,
            values=packed.values, bias=bias, tile_size=tile_size, winograd_relu=winograd_relu,
            stages=stages, products=products)
    return in_graph_calls(make)


def stage_timing_available():
    return hasattr(ops.load_op_library(), "sparse_winograd_conv2d_stages")


def pruned_positions(rng, shape, density, filter_block):
    """Where a kernel of `shape` (a, a, in, filters) is pruned, uniformly at random: single
    weights, or (coordinate, channel) entries of blocks of `filter_block` filters together."""
    filters = shape[-1]
    blocks = -(-filters // filter_block)
    pruned = rng.random(shape[:-1] + (blocks,)) >= density
    return np.repeat(pruned, filter_block, axis=-1)[..., :filters]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--densities", default="1.0,0.4,0.25,0.1")
    parser.add_argument("--tiles", default="2,4")
    parser.add_argument("--layers", default="all", help="comma-separated layer indices or all")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--winograd_relu", action="store_true")
    parser.add_argument("--filter_block", type=int, default=1,
                        help="prune blocks of this many filters together (4: the op's group "
                             "micro-kernel); 1 prunes single weights")
    parser.add_argument("--no_stages", action="store_true", help="skip the products-only timing")
    parser.add_argument("--products", default="auto",
                        help="comma-separated products paths of the op to time (auto, csr, jit)")
    parser.add_argument("--peak_gflops", type=float, default=None,
                        help="FP32 peak for the %% peak column (bench/fma_peak.cc measures it)")
    args = parser.parse_args()
    paths = args.products.split(",")
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    densities = [float(d) for d in args.densities.split(",")]
    tiles = [int(t) for t in args.tiles.split(",")]
    layers = LAYERS if args.layers == "all" else [LAYERS[int(i)] for i in args.layers.split(",")]
    peak = peak_gflops() if args.peak_gflops is None else args.peak_gflops
    if not args.no_stages and not stage_timing_available():
        print(f"Products-only timing skipped: {ops.loader.library_path()} is not a benchmark "
              "build (see this script's docstring).")
        args.no_stages = True
    print(f"{ops.cpu_model()} (kernels: {ops.active_isa()}), TF {tf.__version__}, "
          f"clock {cpu_clock_ghz():.2f} GHz, FP32 peak {peak:.0f} GFLOP/s "
          f"({'measured' if args.peak_gflops else 'nominal'}) "
          f"({THREADS} threads), reps {args.reps}, winograd_relu={args.winograd_relu}, "
          f"filter_block={args.filter_block}")
    print("| batch | tile | density | layer | products | TF ms | op ms | ratio (best) "
          "| ratio (median) | products GFLOP/s | % peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    totals = {}
    for batch in batches:
        for tile in tiles:
            for density in densities:
                for hw, cin, cout in layers:
                    x = [tf.constant(rng.standard_normal((batch, hw, hw, cin)), tf.float32)
                         for _ in range(calls_per_run(batch))]
                    g = (rng.standard_normal((3, 3, cin, cout)) * 0.1).astype(np.float32)
                    a = tile + 2
                    u = rng.standard_normal((a, a, cin, cout)).astype(np.float32)
                    u[pruned_positions(rng, u.shape, density, args.filter_block)] = 0.0
                    packed = tuple(t.numpy() for t in ops.pack_kernel(u))
                    nnz = packed[3].size
                    samplers = [time_fn(tf_conv(g), x)]
                    for path in paths:
                        samplers.append(time_fn(our_conv(packed, tile, args.winograd_relu,
                                                         products=path), x))
                    if not args.no_stages:
                        for path in paths:
                            for stages in (2, 0):
                                samplers.append(time_fn(our_conv(
                                    packed, tile, args.winograd_relu, stages, path), x))
                    res = measure(samplers, args.reps)
                    tf_best, tf_med = res[0]
                    for i, path in enumerate(paths):
                        op_best, op_med = res[1 + i]
                        t = totals.setdefault((batch, tile, density, path), [0.0] * 4)
                        t[0] += tf_best
                        t[1] += op_best
                        t[2] += tf_med
                        t[3] += op_med
                        gflops = pct = float("nan")
                        if not args.no_stages:
                            at = 1 + len(paths) + 2 * i
                            products = max(res[at][0] - res[at + 1][0], 1e-9)
                            tiles_count = batch * (-(-hw // tile)) ** 2
                            gflops = 2.0 * nnz * tiles_count / products / 1e9
                            pct = 100.0 * gflops / peak
                        print(f"| {batch} | {tile} | {density} | {hw}x{hw}x{cin}->{cout} | "
                              f"{path} | {tf_best * 1e3:.3f} | {op_best * 1e3:.3f} | "
                              f"{tf_best / op_best:.2f} | {tf_med / op_med:.2f} | {gflops:.0f} | "
                              f"{pct:.0f} |", flush=True)
    print()
    print("Totals over the layers (sum of times):")
    print("| batch | tile | density | products | TF ms | op ms | ratio (best) | ratio (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for (batch, tile, density, path), (tb, ob, tm, om) in totals.items():
        print(f"| {batch} | {tile} | {density} | {path} | {tb * 1e3:.2f} | {ob * 1e3:.2f} | "
              f"{tb / ob:.2f} | {tm / om:.2f} |")


if __name__ == "__main__":
    main()
