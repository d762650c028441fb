#!/usr/bin/env bash
# CI: builds the op library with Debian's bazel-bootstrap (offline) and checks that it loads and
# computes the same result as the pip-built kernel's reference. Usage: bash .ci/bazel_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bazel >/dev/null 2>&1; then
  apt-get install -y bazel-bootstrap || { apt-get update && apt-get install -y bazel-bootstrap; }
fi
bazel --version || true
./configure.sh
start=$(date +%s)
bazel build //:_sparse_winograd_ops.so
echo "bazel build took $(( $(date +%s) - start )) s"
library="$(pwd)/bazel-bin/_sparse_winograd_ops.so"
TFSW_OP_LIBRARY="$library" TF_CPP_MIN_LOG_LEVEL=3 python3 - <<'PY'
import numpy as np
from tf_sparse_winograd import ops, transforms
import tensorflow as tf
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 9, 10, 5)).astype(np.float32)
g = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)
for m in (2, 4, 6):
    y = ops.sparse_winograd_conv2d(x, ops.pack_kernel(transforms.kernel_to_winograd(g, m)),
                                   tile_size=m, debug_fill_nan=True)
    err = np.abs(y.numpy() - tf.nn.conv2d(x, g, 1, "SAME").numpy()).max()
    assert err < 1e-3, (m, err)
print("bazel-built library OK:", ops.loader.library_path())
PY
