"""A/B of the transforms: the AVX-512 against the AVX2 kernel on one op (the benchmark build's
stages op), in core cycles per tile and 16 channels (2 threads; the clock is bench/fma_peak.cc's
per-core peak / 32 flops per cycle). Needs the benchmark library (see bench/op_speed.py):

    TFSW_OP_LIBRARY=/tmp/tfsw_bench/ops.so python bench/transform_isa_ab.py

If Zen 4's 256-bit datapaths (a 512-bit operation takes two) bounded the transforms, both
kernels would take the same time for the same work.
"""
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import tensorflow as tf
import op_speed as B
from interleaved import measure
from tf_sparse_winograd import ops

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
GHZ = 117.0 / 32  # fma_peak: 117 GFLOP/s per core at one 16-lane FMA per cycle
rng = np.random.default_rng(0)
print(B.cpu_model(), "clock from FMA peak", GHZ, "GHz")
for tile in (4, 2):
    for hw, cin, cout in [(32, 64, 64), (8, 256, 256)]:
        batch = 32
        a = tile + 2
        x = [tf.constant(rng.standard_normal((batch, hw, hw, cin)).astype(np.float32))
             for _ in range(B.CALLS)]
        u = rng.standard_normal((a, a, cin, cout)).astype(np.float32)
        u[rng.random(u.shape) > 0.1] = 0
        packed = tuple(t.numpy() for t in ops.pack_kernel(u))
        samplers, names = [], []
        for isa in ("avx512", "avx2"):
            for st in (0, 1, 2, 6):
                ops.set_isa(isa)
                s = B.time_fn(B.our_conv(packed, tile, False, st, "csr"), x)
                samplers.append(lambda s=s, isa=isa: (ops.set_isa(isa), s())[1])
                names.append((isa, st))
        res = dict(zip(names, (b for b, _ in measure(samplers, 9))))
        tiles = batch * (-(-hw // tile)) ** 2
        for isa in ("avx512", "avx2"):
            inp = res[(isa, 1)] - res[(isa, 0)]
            out = res[(isa, 6)] - res[(isa, 2)]
            # 2 threads: core cycles = time * 2 * clock
            ci = inp * 2 * GHZ * 1e9 / (tiles * cin / 16)
            co = out * 2 * GHZ * 1e9 / (tiles * cout / 16)
            print(f"tile {tile} {hw}x{hw}x{cin}->{cout} {isa}: input {inp*1e3:.3f} ms "
                  f"({ci:.0f} cycles per tile x 16 ch), output {out*1e3:.3f} ms "
                  f"({co:.0f} cycles per tile x 16 filters)", flush=True)
ops.set_isa("auto")
