"""The package as users get it: installed outside the repository, on the TensorFlow backend only,
and the repository's models/ only under its installed name."""

import os
import subprocess
import sys
import sysconfig

import pytest

import support

_CHECK_INSTALLED = """
import importlib, os, sys, tempfile
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import keras
import tf_sparse_winograd as tfsw

prefix = os.path.realpath(sys.prefix)
assert os.path.realpath(tfsw.__file__).startswith(prefix), tfsw.__file__
for name in ("analysis", "data", "export", "layers", "models", "ops", "pruning", "training",
             "training.checkpointing", "training.config", "training.phases",
             "training.reporting", "training.strategies", "transforms", "winograd_math"):
    module = importlib.import_module("tf_sparse_winograd." + name)
    assert os.path.realpath(module.__file__).startswith(prefix), module.__file__
assert tfsw.ops.op_library_available()

# A tiny conversion and export: a Conv2D model made Winograd, pruned, exported, reloaded.
conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
model = keras.Sequential([keras.Input((8, 8, 2)), conv, keras.layers.Flatten(),
                          keras.layers.Dense(3)])
winograd = tfsw.layers.WinogradConv2D.from_conv2d(conv, tile_size=2)
converted = keras.Sequential([keras.Input((8, 8, 2)), winograd, keras.layers.Flatten(),
                              keras.layers.Dense.from_config(model.layers[-1].get_config())])
converted.layers[-1].set_weights(model.layers[-1].get_weights())
pruned = tfsw.pruning.strip_pruning(tfsw.pruning.prune_to_density(converted, 0.5,
                                                                  skip_first_conv=False))
x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype(np.float32)
path = os.path.join(tempfile.mkdtemp(), "saved")
tfsw.export.export_saved_model(pruned, path)
assert tfsw.ops.CONV_OP_NAME in tfsw.export.graph_op_types(path)
serve = tfsw.export.load_saved_model(path).signatures["serving_default"]
(y,) = serve(tf.constant(x)).values()
np.testing.assert_allclose(y.numpy(), pruned(x).numpy(), rtol=1e-4, atol=1e-4)

# The training library with the paper's model, three phases on mock data.
config = tfsw.training.TrainConfig(
    dataset="cifar10", data_source="tfds", width=0.0625, batch_size=16, max_train_examples=32,
    max_eval_examples=16, analysis_batches=1, verbose=0, epochs=(1, 1),
    model_dir=os.path.join(tempfile.mkdtemp(), "run"))
with tfds.testing.mock_data(num_examples=32):
    results = tfsw.training.run(config)
assert list(results) == ["dense", "prune", "retrain"], results
print("INSTALLED-OK")
"""


def _keras_backend_error(env):
    result = support.run_python("import tf_sparse_winograd", env=env, check=False)
    assert result.returncode != 0
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("backend", support.fast_sample(["jax", "torch", "numpy"], 3))
def test_other_keras_backends_are_refused_by_name(backend):
    message = _keras_backend_error({"KERAS_BACKEND": backend})
    assert message.startswith("ImportError: tf-sparse-winograd needs Keras' TensorFlow backend")
    assert f"Keras is set to use '{backend}' (KERAS_BACKEND={backend})" in message


@pytest.mark.slow
def test_keras_json_backend_is_refused_by_name(tmp_path):
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    message = _keras_backend_error({"KERAS_BACKEND": None, "KERAS_HOME": tmp_path})
    assert f"Keras is set to use 'jax' ({tmp_path / 'keras.json'})" in message


@pytest.mark.slow
def test_tensorflow_backend_named_explicitly_is_accepted():
    support.run_python("import tf_sparse_winograd", env={"KERAS_BACKEND": "tensorflow"})


@pytest.mark.slow
def test_models_directory_only_imports_under_the_package_name():
    result = support.run_python("import models", cwd=support.REPO, check=False)
    assert result.returncode != 0
    assert "import it under that name" in result.stderr
    support.run_python("import tf_sparse_winograd.models as m; assert m.build_model",
                       cwd=support.REPO)


def _purelib(python):
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_non_editable_install_works_outside_the_repository(tmp_path):
    """`pip install .` (build isolation on) into a new venv; everything runs from another directory.

    The build reuses the objects the development install left in the object cache (see
    tf_sparse_winograd/ops/build.py) when the sources are the same: what is tested here is the
    packaging and the install, the compilation itself being what the set-up command does.

    The venv sees this environment's packages (TensorFlow, Keras, ...) through a .pth line instead
    of installing them again: what is tested is the package, built and installed as a user would.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site_packages = _purelib(python)
    with open(os.path.join(site_packages, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)

    # Without a compiler the build stops with a message that names it, not a traceback.
    no_compiler = subprocess.run([python, "-m", "pip", "install", "--no-deps", support.REPO],
                                 capture_output=True, text=True, cwd=tmp_path,
                                 env=dict(env, CXX="no-such-compiler++"), check=False)
    assert no_compiler.returncode != 0
    output = no_compiler.stdout + no_compiler.stderr
    assert "No C++ compiler: 'no-such-compiler++' is not on PATH" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]

    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", support.REPO],
                             capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert install.returncode == 0, (install.stdout + install.stderr)[-4000:]
    installed = sorted(os.listdir(site_packages))
    assert "tf_sparse_winograd" in installed
    assert "models" not in installed, installed
    assert os.path.exists(os.path.join(site_packages, "tf_sparse_winograd", "models",
                                       "vgg_nagadomi.py"))

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = support.run_python(_CHECK_INSTALLED, python=python, cwd=workdir,
                                env={"PYTHONPATH": None, "TFSW_OP_LIBRARY": None})
    assert "INSTALLED-OK" in result.stdout


def test_object_cache_key_covers_every_source_flag_and_the_compiler(tmp_path, monkeypatch):
    """A cached object is reused only for the same sources (any file under cc/, headers
    included), the same flags and the same compiler."""
    from tf_sparse_winograd.ops import build  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(build, "CC_DIR", str(tmp_path))
    (tmp_path / "kernels").mkdir()
    header = tmp_path / "kernels" / "a.h"
    header.write_text("int a;")
    digests = [build.sources_digest()]
    header.write_text("int b;")
    digests.append(build.sources_digest())
    header.rename(tmp_path / "kernels" / "b.h")
    digests.append(build.sources_digest())
    (tmp_path / "kernels" / "empty.inc").write_text("")
    digests.append(build.sources_digest())
    assert len(set(digests)) == 4
    key = build.object_key("g++ 12", digests[0], "ops/x.cc", ["-O3"])
    assert key == build.object_key("g++ 12", digests[0], "ops/x.cc", ["-O3"])
    assert len({key, build.object_key("g++ 13", digests[0], "ops/x.cc", ["-O3"]),
                build.object_key("g++ 12", digests[1], "ops/x.cc", ["-O3"]),
                build.object_key("g++ 12", digests[0], "ops/y.cc", ["-O3"]),
                build.object_key("g++ 12", digests[0], "ops/x.cc", ["-O1"])}) == 5
    monkeypatch.setenv("TFSW_BUILD_CACHE", "off")
    assert build.object_cache_dir() is None
    monkeypatch.setenv("TFSW_BUILD_CACHE", str(tmp_path / "cache"))
    assert build.object_cache_dir() == str(tmp_path / "cache")
    monkeypatch.delenv("TFSW_BUILD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.object_cache_dir() == str(tmp_path / "xdg" / "tf-sparse-winograd")
