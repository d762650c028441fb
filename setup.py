"""Builds the package and compiles the SparseWinograd op library against the installed TF.

`pip install .` and `pip install -e .` both compile `tf_sparse_winograd/ops/_sparse_winograd_ops.so`
with tf_sparse_winograd/ops/build.py (g++, flags from tf.sysconfig). The build backend
(build_backend.py) makes sure a TensorFlow is there to compile against: the one already installed,
or the same requirement installed into pip's isolated build environment.

The repository's top-level `models/` directory is installed as `tf_sparse_winograd.models`.
"""

import importlib.util
import os

from setuptools import Extension
from setuptools import find_packages
from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

ROOT = os.path.dirname(os.path.abspath(__file__))
OPS_DIR = os.path.join(ROOT, "tf_sparse_winograd", "ops")


def _load_op_build():
    # Loaded by path: importing the package would import tensorflow.
    spec = importlib.util.spec_from_file_location("tfsw_op_build", os.path.join(OPS_DIR, "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildOpLibrary(build_ext):
    """Builds the op library with build.py instead of distutils' compiler driver."""

    def get_ext_filename(self, fullname):
        # A plain `_sparse_winograd_ops.so`: it is loaded with tf.load_op_library, not imported.
        return os.path.join(*fullname.split(".")) + ".so"

    def build_extension(self, ext):
        op_build = _load_op_build()
        try:
            op_build.build_library(self.get_ext_fullpath(ext.name))
        except op_build.BuildError as error:
            # setuptools prints a CompileError as one "error: ..." line, without a traceback.
            raise CompileError(str(error)) from None


_op_build = _load_op_build()
setup(
    packages=find_packages(include=["tf_sparse_winograd", "tf_sparse_winograd.*"])
    + ["tf_sparse_winograd.models"],
    package_dir={"tf_sparse_winograd.models": "models"},
    ext_modules=[Extension(
        "tf_sparse_winograd.ops._sparse_winograd_ops",
        sources=[os.path.relpath(os.path.join(_op_build.CC_DIR, s), ROOT)
                 for s in _op_build.SOURCES])],
    cmdclass={"build_ext": BuildOpLibrary},
)
