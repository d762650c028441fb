#!/bin/bash
# Builds bench/kernel_ab.cc against two kernel source trees and runs it.
#
#   bench/kernel_ab.sh DIR_A DIR_B BATCH TILE DENSITY [REPS] [STAGES]
#
# DIR_A, DIR_B: tf_sparse_winograd/ops/cc/kernels of two checkouts, e.g. the committed kernel in
# a worktree (git worktree add /tmp/tfsw_base HEAD) against the working tree. Needs only g++.
# Environment: LAYER=i (one layer), COLD=1 (caches evicted before every timed run); see kernel_ab.cc.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir_a=$(cd "$1" && pwd)
dir_b=$(cd "$2" && pwd)
shift 2
build=$(mktemp -d /tmp/tfsw_kernel_ab.XXXXXX)
trap 'rm -rf "$build"' EXIT
flags=(-O3 -std=c++17 -mavx512f -mavx2 -mfma -mprefer-vector-width=512)
for variant in A B; do
  dir=$dir_a
  [ "$variant" = B ] && dir=$dir_b
  printf '#define TFSW_ISA_NAME "%s"\n#define TFSW_KERNEL_FACTORY Kernel%s\n#include "%s/sparse_winograd_conv2d_impl.inc"\n' \
    "$variant" "$variant" "$dir" > "$build/kernel_$variant.cc"
  g++ "${flags[@]}" -I"$dir" -c "$build/kernel_$variant.cc" -o "$build/kernel_$variant.o" &
done
wait
# Xbyak (generated products) comes with TensorFlow's headers.
tf_include=${TF_INCLUDE:-$(python3 -c 'import tensorflow as tf; print(tf.sysconfig.get_include())' 2>/dev/null)}
g++ -O3 -std=c++17 -I"$dir_b" -I"$tf_include" "$here/kernel_ab.cc" "$dir_b/work_plan.cc" \
  "$dir_b/sparse_products_jit.cc" "$build/kernel_A.o" "$build/kernel_B.o" -o "$build/kernel_ab"
"$build/kernel_ab" "$@"
