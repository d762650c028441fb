#!/usr/bin/env bash
# CI: the op library built with AddressSanitizer and UndefinedBehaviorSanitizer
# (-fsanitize=address,undefined -fno-omit-frame-pointer), and the op tests (the generated
# products' included), both fuzz tests and the hostile-SavedModel test run against it. Fails if a
# test fails or if any sanitizer report was written (by pytest's process or any subprocess a test
# started).
#
# Usage: bash .ci/sanitizers.sh   (in an environment where the package is installed; .ci/run
# calls it in its fresh venv). Needs only g++ (which ships libasan and libubsan). Extra
# arguments go to pytest; TFSW_SANITIZER_LIBRARY=PATH reuses a library built with --sanitize.
#
# Python is not instrumented, so the ASan runtime is preloaded (LD_PRELOAD, inherited by every
# subprocess). Python's own allocations are never freed at exit, so leak detection is off; five
# frames of allocation stack (not 30) make TensorFlow's many small allocations cheaper.
# TFSW_TEST_OP_LIBRARY_ONLY=1 leaves out what does not run the op library (test_op.py's
# comparisons of the pure-TF path) and runs one convolution's hostile-SavedModel variants of
# three: tracing tf.functions and loading SavedModels took most of the time under ASan.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
work=$(mktemp -d /tmp/tfsw_sanitizers.XXXXXX)
library="$work/_sparse_winograd_ops.so"
reports="$work/reports"
mkdir -p "$reports"

if [ -n "${TFSW_SANITIZER_LIBRARY:-}" ]; then  # reuse a sanitizer build (local reruns)
  library=$TFSW_SANITIZER_LIBRARY
else
  echo "== sanitizer build of the op library: $library"
  python -m tf_sparse_winograd.ops.build --sanitize --output "$library"
  echo "== built in $(( $(date +%s) - start )) s"
fi

# The ASan runtime first; then libstdc++, which python does not link: without it preloaded the
# runtime finds no __cxa_throw to intercept and aborts at the first C++ exception of any
# extension ("CHECK failed: ... real___cxa_throw", seen with matplotlib's ft2font).
cxx=${CXX:-g++}
asan_runtime=$(realpath "$("$cxx" -print-file-name=libasan.so)")
cxx_runtime=$(realpath "$("$cxx" -print-file-name=libstdc++.so.6)")
for runtime in "$asan_runtime" "$cxx_runtime"; do
  if [ ! -f "$runtime" ]; then
    echo "error: $cxx has no $(basename "$runtime") (got $runtime)" >&2
    exit 1
  fi
done

tests=(tests/test_op.py tests/test_sparse_dense_op.py tests/test_op_environment.py
       tests/test_op_generated_products.py tests/test_op_saved_model_compat.py
       tests/test_op_fuzz.py tests/test_hostile_saved_model.py)
echo "== ${tests[*]} against the sanitizer build"
status=0
TFSW_OP_LIBRARY="$library" \
TFSW_TEST_OP_LIBRARY_ONLY=1 \
LD_PRELOAD="$asan_runtime $cxx_runtime" \
ASAN_OPTIONS="detect_leaks=0:malloc_context_size=5:log_path=$reports/asan:abort_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan" \
  python -m pytest -q -p no:cacheprovider --durations=15 "${tests[@]}" "$@" || status=$?

found=$(find "$reports" -type f | sort)
if [ -n "$found" ]; then
  echo "== sanitizer reports:"
  for report in $found; do
    echo "--- $report"
    head -c 20000 "$report"
  done
  status=1
fi
echo "== sanitizer step took $(( $(date +%s) - start )) s; reports: $(echo "$found" | grep -c . || true)"
rm -rf "$work"
exit "$status"
