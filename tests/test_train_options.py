"""train.py options of the training loop: held-out evaluation, steps per execution, XLA, the
Winograd kernel's gradient scale."""

import json
import os

import pytest

from tf_sparse_winograd import training
import support


def _config(tmp_path, **overrides):
    values = dict(width=0.0625, batch_size=16, max_train_examples=None, max_eval_examples=None,
                  analysis_batches=1, verbose=0, epochs=(1, 1), learning_rate=0.02,
                  data_source="idx", data_dir=support.write_fashion_idx(str(tmp_path / "idx")),
                  model_dir=str(tmp_path / "run"), phase="dense", conv_type="spatial")
    values.update(overrides)
    return training.TrainConfig(**values)


def test_holdout_replaces_the_test_split_for_evaluation(tmp_path):
    config = _config(tmp_path, holdout_examples=24, steps_per_execution=3)
    results = training.Runner(config).run()["dense"]
    assert results["eval_split"] == "holdout"
    assert results["eval_examples"] == 24 and results["train_examples"] == 96 - 24
    # 72 training examples in batches of 16: 5 steps per epoch, run 3 at a time.
    progress = training.read_progress(config.phase_dir("dense"))
    assert progress[-1]["optimizer_iterations"] == 5
    with open(os.path.join(config.phase_dir("dense"), "flags.json")) as f:
        assert json.load(f)["holdout_examples"] == 24


@pytest.mark.slow  # XLA compiles the training step.
def test_default_evaluates_on_the_test_split(tmp_path):
    results = training.Runner(_config(tmp_path, jit_compile=True)).run()["dense"]
    assert results["eval_split"] == "test" and results["eval_examples"] == 48


@pytest.mark.parametrize("name,value", [("steps_per_execution", 0), ("holdout_examples", -1),
                                        ("steps_per_execution", 1.5), ("holdout_examples", True),
                                        ("kernel_gradient_scale", None)])
def test_bad_values_name_the_argument(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        _config(tmp_path, **{name: value})


@pytest.mark.parametrize("flag,expected", [("transform", "transform"), ("none", None)])
def test_kernel_gradient_scale_reaches_every_winograd_layer(tmp_path, flag, expected):
    from tf_sparse_winograd.layers import WinogradConv2D
    from tf_sparse_winograd.training import phases
    config = _config(tmp_path, conv_type="winograd_relu", tile_size=4, kernel_gradient_scale=flag)
    model = phases.build_model(config, {"image_shape": (28, 28, 1), "num_classes": 10})
    layers = [layer for layer in model.layers if isinstance(layer, WinogradConv2D)]
    assert len(layers) == 8
    assert {layer.kernel_gradient_scale for layer in layers} == {expected}


@pytest.mark.slow  # train.py in a subprocess.
def test_train_py_flags(tmp_path):
    idx = support.write_fashion_idx(str(tmp_path / "idx"))
    out = support.run_train(support.TINY_TRAIN_FLAGS + [f"--data_dir={idx}", "--data_source=idx",
                                        f"--model_dir={tmp_path / 'run'}", "--phase=dense",
                                        "--max_train_examples=0", "--holdout_examples=32",
                                        "--steps_per_execution=2"]).stdout
    assert "eval accuracy" in out and "on 32 holdout examples" in out
    with open(tmp_path / "run" / "dense" / "results.json") as f:
        results = json.load(f)
    assert results["eval_split"] == "holdout" and results["eval_examples"] == 32


@pytest.mark.slow
def test_gradual_pruning_reaches_the_density_and_keeps_the_first_conv(tmp_path):
    from tf_sparse_winograd import pruning
    from tf_sparse_winograd.training import phases
    config = _config(tmp_path, conv_type="winograd_relu", phase="all", pruning="gradual",
                     density=(0.3,), epochs=(1, 4))
    runner = training.Runner(config)
    results = runner.run()
    assert list(results) == ["dense", "retrain"]
    assert config.phase_dir("retrain").endswith("gradual_d0.3")
    retrain = results["retrain"]
    assert retrain["pruning"] == "gradual"
    # 96 examples / 16 = 6 steps per epoch, 24 in the phase: the ramp ends at step 12.
    assert (retrain["gradual_end_step"], retrain["gradual_frequency"]) == (12, 1)
    assert phases.gradual_schedule_steps(10000) == (5000, 100)
    rows = {r["layer"]: r for r in retrain["sparsity"]}
    pruned = [r for r in rows.values() if r["pruned"]]
    assert len(pruned) == 7 and "conv1" not in {r["layer"] for r in pruned}
    assert all(abs(r["density"] - 0.3) < 1e-2 for r in pruned)
    wrappers = pruning.collect_prunable_layers(runner.models["retrain"])
    assert all(int(w.pruning_step.numpy()) == 24 for w in wrappers)
    with pytest.raises(ValueError, match="no 'prune' phase"):
        config.phase_dir("prune")
