"""Prune-and-retrain under MirroredStrategy over two logical CPUs matches one device."""

import json
import os
import shutil

import numpy as np
import pytest

import support

pytestmark = pytest.mark.slow  # Trains in subprocesses.

_WORKER = r'''
import json, sys
import numpy as np
import tensorflow as tf
replicas, model_dir, idx, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if replicas > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
from tf_sparse_winograd import pruning, training
from tf_sparse_winograd.pruning import pruning_impl

config = training.TrainConfig(
    width=0.0625, batch_size=16, max_train_examples=64, max_eval_examples=32, analysis_batches=0,
    verbose=0, epochs=(1, 1), learning_rate=0.02, conv_type="winograd_relu", density=(0.4,),
    data_source="idx", data_dir=idx, model_dir=model_dir, phase="all",
    strategy="mirrored" if replicas > 1 else "default")
runner = training.Runner(config)
results = runner.run()
model = runner.models["retrain"]
masks, report = {}, {"replicas": runner.strategy.num_replicas_in_sync, "replica_masks_equal": True,
                     "pruned_weights_zero": True}
for wrapper in pruning.collect_prunable_layers(model):
    for weight, mask, _ in wrapper.pruning_vars:
        local_masks = [np.array(v) for v in
                       runner.strategy.experimental_local_results(pruning_impl.tf_variable(mask))]
        local_weights = [np.array(v) for v in
                         runner.strategy.experimental_local_results(pruning_impl.tf_variable(weight))]
        report["replica_masks_equal"] &= all(np.array_equal(local_masks[0], m) for m in local_masks)
        report["pruned_weights_zero"] &= all(not np.any(w[local_masks[0] == 0]) for w in local_weights)
        masks[wrapper.layer.name] = local_masks[0]
np.savez(out + ".npz", **masks)
report["densities"] = {r["layer"]: r["density"] for r in results["retrain"]["sparsity"]}
report["local_copies"] = len(local_masks)
with open(out + ".json", "w") as f:
    json.dump(report, f)
'''


def test_mirrored_two_cpus_same_masks_as_one_device(tmp_path):
    idx = support.write_fashion_idx(str(tmp_path / "idx"))
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    reports, masks = {}, {}
    for replicas in (1, 2):
        run_dir = str(tmp_path / f"r{replicas}")
        if replicas == 2:  # Start from the dense model the one-device run trained.
            shutil.copytree(os.path.join(str(tmp_path / "r1"), "dense"),
                            os.path.join(run_dir, "dense"))
        out = str(tmp_path / f"out{replicas}")
        support.run_script(worker, replicas, run_dir, idx, out, timeout=600)
        with open(out + ".json") as f:
            reports[replicas] = json.load(f)
        masks[replicas] = dict(np.load(out + ".npz"))
    assert reports[1]["replicas"] == 1 and reports[2]["replicas"] == 2
    assert reports[2]["local_copies"] == 2
    for r in reports.values():
        assert r["replica_masks_equal"] and r["pruned_weights_zero"]
    assert sorted(masks[1]) == sorted(masks[2]) and len(masks[1]) == 7
    for name in masks[1]:
        np.testing.assert_array_equal(masks[1][name], masks[2][name], err_msg=name)
        assert abs(masks[2][name].mean() - 0.4) <= 1.0 / masks[2][name].size
    assert reports[1]["densities"] == reports[2]["densities"]
