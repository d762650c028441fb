"""PEP 517 build backend: setuptools, plus TensorFlow in the build environment when needed.

The op library is compiled against the TensorFlow that ends up installed (its version is compiled
into the library and checked when it is loaded). pip builds the package before it installs the
dependencies, in an isolated environment without them, so:

  * if the environment being installed into already has a TensorFlow that meets setup.cfg's
    requirement, nothing is added: `tf_sparse_winograd/ops/build.py` reads that TensorFlow's
    compile flags by running the target interpreter;
  * otherwise (a bare machine, or a TensorFlow that pip is about to replace) the same requirement
    is added to the build environment, where pip resolves it to the version it then installs.

Every other hook is setuptools' own.
"""

import configparser
import os
import subprocess
import sys
import tempfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  pylint: disable=wildcard-import

from packaging.requirements import Requirement  # setuptools>=71 makes its vendored copy importable.

_ROOT = os.path.dirname(os.path.abspath(__file__))
_VERSION_SCRIPT = "import importlib.metadata as m; print(m.version('tensorflow'))"


def tensorflow_requirement():
    """The `tensorflow` line of setup.cfg's install_requires, as a Requirement."""
    config = configparser.ConfigParser()
    config.read(os.path.join(_ROOT, "setup.cfg"))
    for line in config["options"]["install_requires"].splitlines():
        if line.strip() and Requirement(line).name == "tensorflow":
            return Requirement(line)
    raise RuntimeError("setup.cfg's install_requires has no tensorflow requirement")


def installed_tensorflow_version(python=sys.executable):
    """The TensorFlow version installed for `python` outside pip's build isolation, or None."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME", "PYTHONSAFEPATH")}
    result = subprocess.run([python, "-c", _VERSION_SCRIPT], env=env, cwd=tempfile.gettempdir(),
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or None if result.returncode == 0 else None


def _tensorflow_build_requirements():
    requirement = tensorflow_requirement()
    installed = installed_tensorflow_version()
    if installed is not None and requirement.specifier.contains(installed, prereleases=True):
        return []
    return [str(requirement)]


def get_requires_for_build_wheel(config_settings=None):
    return (_setuptools.get_requires_for_build_wheel(config_settings)
            + _tensorflow_build_requirements())


def get_requires_for_build_editable(config_settings=None):
    return (_setuptools.get_requires_for_build_editable(config_settings)
            + _tensorflow_build_requirements())
