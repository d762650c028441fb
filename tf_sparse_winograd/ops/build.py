"""Compiles the op library `_sparse_winograd_ops.so` in place with g++ against the installed TF.

    python -m tf_sparse_winograd.ops.build [--output PATH] [--cxx g++] [--jobs N] [--no-cache]
    python -m tf_sparse_winograd.ops.build --sanitize --output /tmp/tfsw_asan/ops.so
    python -m tf_sparse_winograd.ops.build --benchmark --output /tmp/tfsw_bench/ops.so

Two variants are built outside the package (--output is then required and must not be the
package's library) and used by pointing TFSW_OP_LIBRARY at them:
- --sanitize: AddressSanitizer and UndefinedBehaviorSanitizer (-fsanitize=address,undefined), for
  .ci/sanitizers.sh. Python is not instrumented, so the process needs the ASan runtime preloaded
  (LD_PRELOAD=$(g++ -print-file-name=libasan.so)).
- --benchmark: also registers SparseWinograd>Conv2DStages, the convolution running only some of
  its stages (bench/op_speed.py times the products with it). The package's library never
  computes a partial result.

setup.py calls `build_library` too, so `pip install .` and `pip install -e .` do the same thing.

Compiled objects are kept in a cache (`$TFSW_BUILD_CACHE`, else `$XDG_CACHE_HOME/tf-sparse-winograd`
or `~/.cache/tf-sparse-winograd`; --no-cache or TFSW_BUILD_CACHE=off turns it off), each under a
key that covers everything its compilation reads from us: the compiler (its path and its
`--version`), every flag but the include directories' paths (TensorFlow's version among them) and
the contents of every file under cc/. A second install of the same sources with the same compiler and
TensorFlow (a new venv, `pip install .` after `pip install -e .`) then only links, in seconds
instead of minutes on two cores; any change to a source, a header or a flag compiles anew.
The flags come from `tf.sysconfig` of the TensorFlow this interpreter imports: inside pip's
isolated build that is the one the build backend put there (build_backend.py); when there is none,
they are read by running the same Python in a subprocess without the isolation variables, which
sees the TensorFlow already installed in the target environment. The TensorFlow version is compiled into the
library itself, as the string `tfsw-built-for-tensorflow=<version>`
(a file beside it would not survive setuptools' copying of editable builds); the loader reads it
without loading the library and refuses one built for another TensorFlow.

This module must import nothing but the standard library: it runs inside pip's isolated build.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CC_DIR = os.path.join(PACKAGE_DIR, "cc")
LIBRARY_NAME = "_sparse_winograd_ops.so"
DEFAULT_OUTPUT = os.path.join(PACKAGE_DIR, LIBRARY_NAME)
VERSION_MARKER = b"tfsw-built-for-tensorflow="

# Instruction set -> its flags. Each op's kernel is compiled once per instruction set, in
# kernels/<op>_<isa>.cc, separately so that the rest of the library (and TensorFlow's headers)
# never see -mavx2 / -mavx512f.
ISA_FLAGS = {
    "generic": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx2", "-mfma", "-mprefer-vector-width=512"],
}
ISA_KERNEL_SOURCES = {f"kernels/{op}_{isa}.cc": flags
                      for op in ("sparse_winograd_conv2d", "sparse_dense")
                      for isa, flags in ISA_FLAGS.items()}
# Translation unit -> extra flags.
SOURCES = {
    "ops/sparse_winograd_conv2d_op.cc": [],
    "ops/sparse_dense_op.cc": [],
    "kernels/sparse_winograd_conv2d_op.cc": [],
    "kernels/sparse_dense_op.cc": [],
    "kernels/op_runtime.cc": [],
    "kernels/work_plan.cc": [],
    "kernels/checked_kernel.cc": [],
    # Xbyak's inline functions stay private to the library.
    "kernels/sparse_products_jit.cc": ["-fvisibility=hidden", "-fvisibility-inlines-hidden"],
    **ISA_KERNEL_SOURCES,
}
COMMON_FLAGS = ["-O3", "-fPIC", "-std=c++17", "-DNDEBUG", "-Wall", "-Wno-unknown-pragmas",
                "-Wno-sign-compare"]
# The sanitizer build: -O1 keeps the reports' stack traces exact and compiles faster than -O3.
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
# With UBSan's pointer checks g++ 12 no longer evaluates absl's `function pointer == nullptr` as a
# constant expression, and TensorFlow's headers (absl's hash tables, through protobuf) fail to
# compile; the translation units that include them go without those three checks. The kernels
# (the TensorFlow-free units) keep every check.
SANITIZE_TF_HEADER_EXCEPTIONS = ["-fno-sanitize=null,nonnull-attribute,returns-nonnull-attribute"]
TENSORFLOW_FREE_SOURCES = {"kernels/work_plan.cc", "kernels/sparse_products_jit.cc",
                           *ISA_KERNEL_SOURCES}
BENCHMARK_FLAGS = ["-DTFSW_BENCHMARK_OPS"]


class BuildError(RuntimeError):
    """The library cannot be built: no compiler, no TensorFlow, or a failed compile or link."""


_INFO_SCRIPT = (
    "import json, tensorflow as tf; "
    "print('TFSW_INFO=' + json.dumps({'version': tf.__version__, "
    "'compile': tf.sysconfig.get_compile_flags(), 'link': tf.sysconfig.get_link_flags()}))")


def tensorflow_info(python=None):
    """Returns {'version', 'compile', 'link'} of the TensorFlow that `python` imports."""
    if python is None:
        try:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            return {"version": tf.__version__, "compile": tf.sysconfig.get_compile_flags(),
                    "link": tf.sysconfig.get_link_flags()}
        except ImportError:
            python = os.environ.get("TFSW_PYTHON", sys.executable)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME", "PYTHONSAFEPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # Run from a neutral directory so that an in-tree package never shadows anything.
    result = subprocess.run([python, "-c", _INFO_SCRIPT], env=env, cwd=tempfile.gettempdir(),
                            capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("TFSW_INFO="):
            return json.loads(line[len("TFSW_INFO="):])
    raise BuildError(
        "Could not import tensorflow to get its compile flags (tried this interpreter and "
        f"{python}). Install tensorflow first. Output:\n{result.stdout}\n{result.stderr}")


def object_cache_dir():
    """Where compiled objects are cached (see the module docstring), or None when it is off."""
    configured = os.environ.get("TFSW_BUILD_CACHE")
    if configured is not None:
        return None if configured.lower() in ("", "0", "off", "none") else configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tf-sparse-winograd")


def sources_digest():
    """sha256 of every file under cc/ (names and contents): what any translation unit includes."""
    digest = hashlib.sha256()
    for directory, subdirectories, files in sorted(os.walk(CC_DIR)):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, CC_DIR).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()


def _compiler_identity(cxx):
    result = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return f"{shutil.which(cxx)}\n{result.stdout}"


def object_key(compiler_identity, sources, source, flags):
    """The cache key of one translation unit's object (see the module docstring)."""
    text = json.dumps([compiler_identity, sources, source, flags])
    return hashlib.sha256(text.encode()).hexdigest()


def _without_include_paths(flags):
    """`flags` with each include directory's path replaced by its place: where the sources and
    TensorFlow's headers are varies (pip builds in a temporary environment), what they hold is in
    the key as the sources' digest and TensorFlow's version."""
    places = iter(range(len(flags)))
    return [f"-I<include {next(places)}>" if flag.startswith("-I") else flag for flag in flags]


def _compile(cxx, source, obj, flags, cache_path=None):
    """Compiles `source` to `obj`, and stores a copy of it at `cache_path` (if given)."""
    command = [cxx, "-c", source, "-o", obj] + flags
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"Compilation failed: {shlex.join(command)}\n{result.stderr}")
    if cache_path is not None:
        try:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            partial = f"{cache_path}.{os.getpid()}.partial"
            shutil.copyfile(obj, partial)
            os.replace(partial, cache_path)  # readers see a whole object or none
        except OSError:
            pass  # a cache that cannot be written only costs the next build its time


def build_library(output=DEFAULT_OUTPUT, cxx=None, jobs=None, verbose=True, sanitize=False,
                  benchmark=False, use_cache=True):
    """Compiles and links the op library to `output`; returns its path.

    `sanitize` and `benchmark` build the variants of the module docstring, which must be written
    elsewhere than the package's library (`output` then has no default). `use_cache=False`
    compiles every translation unit even when the object cache holds it.
    """
    variant = [flag for flag, on in (("sanitize", sanitize), ("benchmark", benchmark)) if on]
    if variant and os.path.abspath(output) == os.path.abspath(DEFAULT_OUTPUT):
        raise BuildError(f"A {' and '.join(variant)} build must not replace the package's op "
                         f"library {DEFAULT_OUTPUT}: give another output path. "
                         f"Received: output={output!r}")
    extra_flags = (SANITIZE_FLAGS if sanitize else []) + (BENCHMARK_FLAGS if benchmark else [])
    cxx = cxx or os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise BuildError(
            f"No C++ compiler: {cxx!r} is not on PATH. The SparseWinograd op library is compiled "
            "when the package is installed and needs a C++17 compiler: install g++ (Debian/Ubuntu: "
            "apt-get install g++), or name another one in the CXX environment variable.")
    info = tensorflow_info()
    jobs = jobs or max(1, min(len(SOURCES), os.cpu_count() or 1))
    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    include = ["-I" + os.path.join(CC_DIR, "kernels")]
    cache_dir = object_cache_dir() if use_cache else None
    if cache_dir is not None:
        identity, sources = _compiler_identity(cxx), sources_digest()
    reused = 0
    with tempfile.TemporaryDirectory(prefix="tfsw_build_") as tmp:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            objects, compiles = [], []
            for i, (source, extra) in enumerate(SOURCES.items()):
                obj = os.path.join(tmp, f"{i}.o")
                objects.append(obj)
                flags = (COMMON_FLAGS + extra + include + info["compile"]
                         + [f'-DTFSW_TF_VERSION="{info["version"]}"'] + extra_flags)
                if sanitize and source not in TENSORFLOW_FREE_SOURCES:
                    flags += SANITIZE_TF_HEADER_EXCEPTIONS
                cache_path = None
                if cache_dir is not None:
                    key = object_key(identity, sources, source, _without_include_paths(flags))
                    cache_path = os.path.join(cache_dir, key + ".o")
                    try:
                        shutil.copyfile(cache_path, obj)
                        reused += 1
                        continue
                    except OSError:
                        pass  # not cached yet
                if verbose:
                    print(f"[tfsw build] {cxx} {source} {' '.join(extra)}", flush=True)
                compiles.append(pool.submit(_compile, cxx, os.path.join(CC_DIR, source), obj,
                                            flags, cache_path))
            for compile_ in compiles:
                compile_.result()  # raises the first BuildError
        temp_output = os.path.join(tmp, LIBRARY_NAME)
        command = ([cxx, "-shared", "-o", temp_output] + objects + info["link"] + ["-O3"]
                   + (SANITIZE_FLAGS if sanitize else []))
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"Link failed: {shlex.join(command)}\n{result.stderr}")
        shutil.move(temp_output, output)  # atomic enough: a loaded old library stays mapped
    if verbose:
        from_cache = f"; {reused} of {len(SOURCES)} objects from {cache_dir}" if reused else ""
        print(f"[tfsw build] wrote {output} (TensorFlow {info['version']}{from_cache})", flush=True)
    return output


def built_for_version(path):
    """The TensorFlow version compiled into the library at `path`, or None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    start = data.find(VERSION_MARKER)
    if start < 0:
        return None
    start += len(VERSION_MARKER)
    end = data.find(b"\0", start)
    return data[start:end].decode("ascii", "replace") if end > start else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None,
                        help="where to write the library (default: the package's, "
                             "which --sanitize and --benchmark must not replace)")
    parser.add_argument("--cxx", default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--sanitize", action="store_true",
                        help="build with -fsanitize=address,undefined (needs --output)")
    parser.add_argument("--no-cache", action="store_true",
                        help="compile every translation unit, even those the object cache holds")
    parser.add_argument("--benchmark", action="store_true",
                        help="also register the stage-timing op of bench/op_speed.py "
                             "(needs --output)")
    args = parser.parse_args(argv)
    if (args.sanitize or args.benchmark) and args.output is None:
        parser.error("--sanitize and --benchmark need --output (outside the package)")
    try:
        build_library(args.output or DEFAULT_OUTPUT, args.cxx, args.jobs,
                      sanitize=args.sanitize, benchmark=args.benchmark,
                      use_cache=not args.no_cache)
    except BuildError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
