"""End-to-end tests of train.py / tf_sparse_winograd.training on tiny budgets."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_sparse_winograd import training
from tf_sparse_winograd.training import phases
import support


def _tiny_config(model_dir, **overrides):
    values = dict(width=0.0625, batch_size=16, max_train_examples=64, max_eval_examples=32,
                  analysis_batches=1, verbose=0, epochs=(1, 1), learning_rate=0.02,
                  model_dir=str(model_dir))
    values.update(overrides)
    return training.TrainConfig(**values)


@pytest.mark.slow  # The fast tier trains in tests/test_train_options.py.
def test_all_phases_with_tfds_mock_data(tmp_path):
    config = _tiny_config(tmp_path / "run", dataset="cifar10", data_source="tfds",
                          conv_type="winograd_relu", density=(0.5,))
    with tfds.testing.mock_data(num_examples=64):
        runner = training.Runner(config)
        results = runner.run()
    assert list(results) == ["dense", "prune", "retrain"]
    for phase in results:
        directory = config.phase_dir(phase)
        for name in ("flags.txt", "flags.json", "results.json", "model.weights.h5"):
            assert os.path.exists(os.path.join(directory, name)), (phase, name)
        assert 0.0 <= results[phase]["eval_accuracy"] <= 1.0
    assert os.path.isdir(os.path.join(config.phase_dir("dense"), "checkpoints"))
    # Pruned layers: every conv but the first, at exactly the asked density; masks kept in retrain.
    retrained = runner.models["retrain"]
    sparsity = {row["layer"]: row for row in results["retrain"]["sparsity"]}
    pruned = [r for r in sparsity.values() if r["pruned"]]
    assert len(pruned) == 7
    assert all(abs(r["density"] - 0.5) < 1e-3 for r in pruned)
    layers = {l["name"]: l for l in results["retrain"]["multiplies"]["layers"]}
    assert layers["conv1"]["weight_density"] == 1.0
    assert layers["conv2"]["weight_density"] == pytest.approx(0.5, abs=1e-3)
    assert layers["conv2"]["kind"] == "winograd_relu"
    assert layers["conv2"]["activation_density"] is not None
    multiplies = results["retrain"]["multiplies"]
    assert multiplies["total_effective"] < multiplies["total_executed"] < multiplies["total_direct"]
    with open(os.path.join(config.phase_dir("retrain"), "flags.json")) as f:
        assert json.load(f)["conv_type"] == "winograd_relu"
    # Extending the retrain phase resumes from its checkpoint, masks and pruning step included.
    from tf_sparse_winograd import pruning
    masks = {w.layer.name: np.array(w.masks[0]) for w in pruning.collect_prunable_layers(retrained)}
    os.remove(os.path.join(config.phase_dir("retrain"), "results.json"))
    longer = _tiny_config(tmp_path / "run", dataset="cifar10", data_source="tfds",
                          conv_type="winograd_relu", density=(0.5,), epochs=(1, 2), phase="retrain")
    with tfds.testing.mock_data(num_examples=64):
        runner2 = training.Runner(longer)
        runner2.run()
    progress = training.read_progress(config.phase_dir("retrain"))
    assert [(r["event"], r["epoch"]) for r in progress] == [
        ("start", 0), ("epoch_end", 1), ("start", 1), ("epoch_end", 2)]
    assert progress[2]["optimizer_iterations"] == progress[1]["optimizer_iterations"] == 4
    for wrapper in pruning.collect_prunable_layers(runner2.models["retrain"]):
        np.testing.assert_array_equal(np.array(wrapper.masks[0]), masks[wrapper.layer.name])
        assert int(np.array(wrapper.pruning_step)) > 1


@pytest.mark.slow
def test_train_py_with_idx_files_and_restart_at_a_phase(tmp_path):
    idx = support.write_fashion_idx(str(tmp_path / "idx"))
    model_dir = str(tmp_path / "run")
    common = support.TINY_TRAIN_FLAGS + [f"--data_dir={idx}", "--data_source=idx", f"--model_dir={model_dir}",
                              "--conv_type=spatial", "--density=0.6", "--epochs=2,1"]
    out = support.run_train(common + ["--phase=dense"]).stdout
    assert "== dense: eval accuracy" in out
    assert not os.path.exists(os.path.join(model_dir, "prune_d0.6"))
    flagfile = os.path.join(model_dir, "dense", "flags.txt")
    lines = open(flagfile).read().splitlines()
    assert "--conv_type=spatial" in lines and "--epochs=2,1" in lines
    # Restart at the next phases: dense is complete and skipped, prune and retrain run.
    export_dir = str(tmp_path / "saved_model")
    out = support.run_train(["--flagfile=" + flagfile, "--phase=all", f"--export_dir={export_dir}"]).stdout
    assert "== dense" not in out and "== prune" in out and "== retrain" in out
    assert "Final (spatial, density 0.6): eval accuracy" in out
    assert "Reduction vs dense direct" in out  # The multiply table is printed.
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
    progress = training.read_progress(os.path.join(model_dir, "retrain_d0.6"))
    assert [r["event"] for r in progress] == ["start", "epoch_end"]
    with open(os.path.join(model_dir, "retrain_d0.6", "results.json")) as f:
        results = json.load(f)
    assert results["train_examples"] == 64 and results["eval_examples"] == 32
    if phases.tensorboard_available():  # TensorBoard logs need the tensorboard package.
        assert any(f.startswith("events") for _, _, files in
                   os.walk(os.path.join(model_dir, "retrain_d0.6", "logs")) for f in files)
    else:
        assert "TensorBoard is not installed" in out


@pytest.mark.slow
def test_density_per_layer_and_errors(tmp_path):
    from tf_sparse_winograd import models
    config = _tiny_config(tmp_path, density=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3))
    model = models.build_model("vgg_nagadomi", (28, 28, 1), 10, "winograd", width=0.0625)
    spec = phases.density_by_layer(model, config)
    assert spec == {f"conv{i}": d for i, d in zip(range(2, 9), config.density)}
    with pytest.raises(ValueError, match="one per pruned layer"):
        phases.density_by_layer(model, _tiny_config(tmp_path, density=(0.5, 0.4)))
    with pytest.raises(ValueError, match="density"):
        _tiny_config(tmp_path, density=(1.5,))
    with pytest.raises(ValueError, match="phase"):
        _tiny_config(tmp_path, phase="finetune")
    assert _tiny_config(tmp_path, prune_dense=True, prune_first_conv=True).density_tag == "d0.4"


@pytest.mark.slow
def test_retrain_without_prune_output_names_the_fix(tmp_path):
    proc = support.run_train(support.TINY_TRAIN_FLAGS + [f"--model_dir={tmp_path}", "--phase=retrain",
                                         f"--data_dir={support.write_fashion_idx(str(tmp_path / 'i'))}"],
                        check=False)
    assert proc.returncode != 0 and "Run --phase=prune first" in proc.stdout


def test_stray_arguments_are_rejected():
    proc = support.run_train(["oops"], check=False)
    assert proc.returncode != 0 and "Unexpected arguments" in proc.stdout


@pytest.mark.slow
def test_pruning_in_filter_blocks(tmp_path):
    config = _tiny_config(tmp_path / "run", dataset="cifar10", data_source="tfds",
                          conv_type="winograd", density=(0.3,), prune_filter_block=4,
                          phase="all", epochs=(1, 0))
    assert config.density_tag == "d0.3-b4"  # never resumes an unstructured run's directories
    with tfds.testing.mock_data(num_examples=32):
        runner = training.Runner(config)
        runner.run()
    from tf_sparse_winograd import pruning
    wrappers = pruning.collect_prunable_layers(runner.models["retrain"])
    assert len(wrappers) == 7
    for wrapper in wrappers:
        assert wrapper.block_size == (1, 4)
        mask = np.array(wrapper.masks[0])
        filters = mask.shape[-1]
        blocks = mask[..., :filters - filters % 4].reshape(*mask.shape[:-1], -1, 4)
        assert (blocks == blocks[..., :1]).all(), wrapper.name
    with pytest.raises(ValueError, match="prune_filter_block"):
        _tiny_config(tmp_path, prune_filter_block=0)
