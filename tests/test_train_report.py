"""report.py's library: Figure 2/3 PNGs and markdown tables from results.json files."""

import json
import os

import pytest

import support
from tf_sparse_winograd.training import reporting



def _layer(name, kind, density, act):
    return {"name": name, "kind": kind, "direct_multiplies": 1000, "winograd_multiplies": 444,
            "weight_density": density, "activation_density": act,
            "activation_density_std": 0.05, "effective_multiplies": 444 * density * act}


def _write(root, conv_type, phase, density, accuracy):
    kind = {"spatial": "conv3x3", "winograd": "winograd", "winograd_relu": "winograd_relu"}
    act = {"spatial": 0.4, "winograd": 0.95, "winograd_relu": 0.45}[conv_type]
    layers = [_layer("conv1", "winograd" if conv_type != "spatial" else "conv3x3", 1.0, 0.9),
              _layer("conv2", kind[conv_type], density, act),
              {**_layer("fc", "dense", 1.0, 0.5), "activation_density_std": 0.0}]
    path = os.path.join(root, conv_type, f"{phase}_d{density:g}")
    os.makedirs(path)
    effective = sum(l["effective_multiplies"] for l in layers)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"phase": phase, "conv_type": conv_type, "density": [density],
                   "eval_accuracy": accuracy, "eval_examples": 100, "train_examples": 500,
                   "multiplies": {"total_direct": 3000, "total_executed": 1888,
                                  "total_effective": effective, "layers": layers}}, f)


@pytest.fixture
def runs(tmp_path):
    for conv_type in reporting.CONV_TYPE_ORDER:
        for density, acc in ((1.0, 0.9), (0.6, 0.89), (0.25, 0.8)):
            _write(str(tmp_path), conv_type, "prune", density, acc - 0.2)
            _write(str(tmp_path), conv_type, "retrain", density, acc)
    return str(tmp_path)


def test_make_report_writes_figures_and_tables(runs, tmp_path):
    out = str(tmp_path / "report")
    text = reporting.make_report([runs], out)
    for name in ("figure2_accuracy_vs_density.png", "figure3_activation_density.png", "report.md"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000 if name.endswith(".png") else os.path.exists(path)
    assert "| winograd_relu | 0.25 | 0.6000 | 0.8000 |" in text
    rows = reporting.table_rows(reporting.collect_results([runs]))
    assert [(r["conv_type"], r["density"]) for r in rows][:3] == [
        ("spatial", 1.0), ("spatial", 0.6), ("spatial", 0.25)]
    # Figure 3 uses conv layers only, at the lowest density by default.
    act = reporting.activation_rows(rows, 0.25)
    assert [n for n, _, _ in act["winograd_relu"]] == ["conv1", "conv2"]
    assert act["winograd"][1][1] == pytest.approx(0.95)
    assert "0.450 ± 0.050" in text


def test_report_py_cli(runs, tmp_path):
    out = str(tmp_path / "cli")
    proc = support.run_script(support.REPORT_PY, f"--runs={runs}", f"--out_dir={out}",
                              timeout=300)
    assert "Accuracy and multiplies" in proc.stdout
    assert os.path.exists(os.path.join(out, "figure2_accuracy_vs_density.png"))


def test_no_results_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No prune/retrain results"):
        reporting.make_report([str(tmp_path)], str(tmp_path / "out"))
