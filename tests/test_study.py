"""experiments/sparse_winograd_study.py: the grid, resuming, the JSON, and report.py --study."""

import json
import os

import pytest

from tf_sparse_winograd.training import study_report
import support

STUDY = os.path.join(support.REPO, "experiments", "sparse_winograd_study.py")


def _study(args, check=True):
    return support.run_script(STUDY, *args, timeout=3000, check=check)


def test_status_lists_the_grid_in_priority_order(tmp_path):
    out = _study([f"--root={tmp_path}", "--action=status", "--densities=0.4,0.1",
                  "--gradual_densities=0.1"]).stdout
    line = next(l for l in out.splitlines() if l.startswith("0/"))
    units = line.split("Pending: ")[1].split(", ")
    # 4 archs x 3 seeds dense, x 2 one-shot densities, + 2 gradual archs x 3 seeds x 1 density.
    assert len(units) == 12 + 24 + 6
    # Seed by seed: dense, every one-shot density, then gradual, for the central pair first.
    assert units[:9] == ["spatial-s0-dense", "winograd_relu-s0-dense",
                         "spatial-s0-one_shot-d0.4", "winograd_relu-s0-one_shot-d0.4",
                         "spatial-s0-one_shot-d0.1", "winograd_relu-s0-one_shot-d0.1",
                         "spatial-s0-gradual-d0.1", "winograd_relu-s0-gradual-d0.1",
                         "spatial-s1-dense"]
    assert units.index("winograd-s0-dense") > units.index("spatial-s2-gradual-d0.1")
    assert units[-1] == "winograd_relu_f4-s2-one_shot-d0.1"


@pytest.mark.parametrize("args,message", [(["--seeds=0,1"], "at least 3"),
                                          (["--archs=vgg"], "--archs"),
                                          (["--densities=1.5"], "--densities")])
def test_bad_grid_flags_name_the_flag(tmp_path, args, message):
    proc = _study([f"--root={tmp_path}", "--action=status"] + args, check=False)
    assert proc.returncode != 0 and message in proc.stdout


@pytest.mark.slow
def test_tiny_study_trains_resumes_and_reports(tmp_path):
    idx = support.write_fashion_idx(str(tmp_path / "idx"))
    root = str(tmp_path / "study")
    args = [f"--root={root}", "--archs=spatial", "--gradual_archs=spatial", "--densities=0.5",
            "--gradual_densities=0.5", "--width=0.0625", "--dense_epochs=1",
            "--retrain_epochs=2", "--batch_size=16", "--analysis_batches=1",
            f"--extra_train_flags=--data_dir={idx}", "--workers=2",
            f"--status_file={tmp_path / 'status'}", f"--pid_file={tmp_path / 'pid'}",
            f"--archive={tmp_path / 'archive'}"]
    _study(args)
    with open(os.path.join(root, "study.json")) as f:
        study = json.load(f)
    assert study["progress"] == {"units": 9, "done": 9, "pending": []}
    runs = {(r["method"], r["seed"]): r for r in study["runs"]}
    assert runs[("dense", 0)]["curve"][0]["epoch"] == 1
    assert runs[("one_shot", 1)]["after_pruning"]["eval_examples"] == 48
    assert runs[("gradual", 2)]["final"]["layers"][1]["weight_density"] == pytest.approx(0.5, 0.02)
    assert "study stopped: 9/9 units done" in open(tmp_path / "status").read()
    assert int(open(tmp_path / "pid").read()) > 0
    # Rerunning the same command trains nothing and gives the same JSON.
    logs = {n: os.path.getsize(os.path.join(root, "logs", n))
            for n in os.listdir(os.path.join(root, "logs"))}
    _study(args)
    assert logs == {n: os.path.getsize(os.path.join(root, "logs", n)) for n in logs}
    with open(os.path.join(root, "study.json")) as f:
        assert json.load(f)["runs"] == study["runs"]
    # A new machine: an empty --root and the archive give the same JSON, and train nothing.
    new_root = str(tmp_path / "new_machine")
    _study([a.replace(root, new_root) for a in args])
    assert not os.listdir(os.path.join(new_root, "logs"))
    with open(os.path.join(new_root, "study.json")) as f:
        assert json.load(f)["runs"] == study["runs"]
    archived = sorted(os.listdir(str(tmp_path / "archive")))
    assert len(archived) == 9 and not any(n.endswith(".partial") for n in archived)
    # Dense weights are kept (later units start from them); pruned ones only for --speed_seed.
    assert os.path.exists(tmp_path / "archive" / "spatial-s2-dense" / "model.weights.h5.gz")
    assert os.path.exists(tmp_path / "archive" / "spatial-s1-gradual-d0.5" / "model.weights.h5.gz")
    assert not os.path.exists(tmp_path / "archive" / "spatial-s2-one_shot-d0.5"
                              / "model.weights.h5.gz")
    assert os.path.exists(os.path.join(new_root, "runs", "spatial", "seed0", "dense",
                                       "model.weights.h5"))
    # The speed pass times the exports of --speed_seed (1) against its dense spatial model, in a
    # temporary directory it removes, and collect adds its measurements to the JSON.
    speed_tmp = tmp_path / "speed_tmp"
    speed_tmp.mkdir()
    support.run_script(STUDY, *args, "--action=speed", "--speed_rounds=1", "--max_load=100",
                       env={"TMPDIR": speed_tmp}, timeout=900)
    assert not os.listdir(speed_tmp)
    assert os.path.exists(tmp_path / "archive" / "speed.json")  # It outlives --root.
    _study(args + ["--action=collect"])
    with open(os.path.join(root, "study.json")) as f:
        speed = json.load(f)["speed"]
    assert speed["reference"] == "spatial-s1-dense" and speed["seed"] == 1
    for batch in ("1", "32"):
        timed = speed["batches"][batch]
        assert set(timed) == {"spatial-s1-dense", "spatial-s1-one_shot-d0.5",
                              "spatial-s1-gradual-d0.5"}
        assert timed["spatial-s1-dense"]["speedup_vs_dense_spatial"] == 1.0
        assert all(t["best_ms"] > 0 and t["median_ms"] >= t["best_ms"] for t in timed.values())
    # report.py --study writes the tables and the four figures.
    out_dir = str(tmp_path / "report")
    support.run_script(support.REPORT_PY, f"--study={root}/study.json", f"--out_dir={out_dir}",
                       timeout=600)
    for name in ("study_report.md", "study_accuracy_vs_density.png",
                 "study_accuracy_vs_multiplies.png", "study_dense_curves.png",
                 "study_activation_density.png"):
        assert os.path.exists(os.path.join(out_dir, name)), name


def test_units_archived_without_weights_are_collected_and_block_their_dependents(tmp_path):
    archive = tmp_path / "archive"
    dense = _record("spatial", 0, "dense", 1.0, 0.93)
    dense["curve"] = [{"epoch": 1, "val_accuracy": 0.9, "seconds": 60.0}]
    for name, record in (("spatial-s0-dense", dense),
                         ("spatial-s0-one_shot-d0.4", _record("spatial", 0, "one_shot", 0.4,
                                                              0.92, pruned=0.8))):
        os.makedirs(archive / name)
        with open(archive / name / "record.json", "w") as f:
            json.dump(record, f)
    args = [f"--root={tmp_path / 'root'}", f"--archive={archive}", "--archs=spatial",
            "--densities=0.4,0.1", "--gradual_densities=0.1"]
    out = _study(args + ["--action=status"]).stdout
    assert any(line.startswith("2/12 units done") for line in out.splitlines())
    blocked = next(l for l in out.splitlines() if l.startswith("Cannot start"))
    assert blocked.split(": ")[1].split(", ") == ["spatial-s0-one_shot-d0.1",
                                                  "spatial-s0-gradual-d0.1"]
    _study(args + ["--action=collect", f"--out={tmp_path / 'study.json'}"])
    with open(tmp_path / "study.json") as f:
        study = json.load(f)
    assert [r["final"]["eval_accuracy"] for r in study["runs"]] == [0.93, 0.92]
    assert study["progress"]["done"] == 2
    # A replacement seed stands in for the blocked points, its dense model first.
    out = _study(args + ["--action=status", "--replacement_seed=3"]).stdout
    line = next(l for l in out.splitlines() if l.startswith("2/13 units done"))
    pending = line.split("Pending: ")[1].split(", ")
    assert pending[pending.index("spatial-s3-dense"):] == [
        "spatial-s3-dense", "spatial-s3-one_shot-d0.1", "spatial-s3-gradual-d0.1",
        "spatial-s1-dense"] + pending[pending.index("spatial-s1-dense") + 1:]
    assert not any(l.startswith("Cannot start") for l in out.splitlines())
    proc = _study(args + ["--action=status", "--replacement_seed=1"], check=False)
    assert proc.returncode != 0 and "--replacement_seed must not be one of --seeds" in proc.stdout


def test_suspended_units_resume_on_a_new_machine_from_their_checkpoints(tmp_path):
    """--action=suspend archives the unfinished units' run directories; an empty --root gets
    them back (and the finished units' files), and a finished unit drops its resume archive."""
    root, archive = tmp_path / "root", tmp_path / "archive"
    args = [f"--archive={archive}", "--archs=spatial", "--densities=0.4",
            "--gradual_densities=0.4", "--gradual_archs=spatial"]
    dense = root / "runs" / "spatial" / "seed0" / "dense"
    retrain = root / "runs" / "spatial" / "seed0" / "retrain_d0.4"
    prune = root / "runs" / "spatial" / "seed0" / "prune_d0.4"
    files = {dense / "checkpoints" / "checkpoint": "model_checkpoint_path: \"ckpt-3\"\n",
             dense / "checkpoints" / "ckpt-3.index": "index",
             dense / "checkpoints" / "ckpt-3.data-00000-of-00001": "data",
             dense / "progress.jsonl": '{"event": "epoch_end", "epoch": 3}\n',
             prune / "results.json": "{}", retrain / "checkpoints" / "checkpoint": "state",
             retrain / "flags.json": "{}"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (dense / "checkpoints" / "ckpt-2.index").write_text("older")  # Not archived.
    out = _study([f"--root={root}", "--action=suspend"] + args).stdout
    assert sorted(os.listdir(archive)) == ["spatial-s0-dense.resume.tar.gz",
                                           "spatial-s0-one_shot-d0.4.resume.tar.gz"], out
    (archive / "speed.json").write_text('{"seed": 1}')  # As the speed pass leaves it.
    new_root = tmp_path / "new_machine"
    status = _study([f"--root={new_root}", "--action=status"] + args).stdout
    assert any(line.startswith("0/9 units done") for line in status.splitlines()), status
    assert (new_root / "speed.json").read_text() == '{"seed": 1}'
    for path, text in files.items():
        assert (new_root / path.relative_to(root)).read_text() == text, path
    assert not (new_root / "runs" / "spatial" / "seed0" / "dense" / "checkpoints"
                / "ckpt-2.index").exists()
    # The dense unit finishes: suspending again removes its resume archive.
    (dense / "results.json").write_text("{}")
    _study([f"--root={root}", "--action=suspend"] + args)
    assert sorted(os.listdir(archive)) == ["spatial-s0-one_shot-d0.4.resume.tar.gz",
                                           "speed.json"]


def _record(arch, seed, method, density, accuracy, pruned=None):
    layers = [{"name": "conv1", "kind": "conv3x3", "weight_density": 1.0,
               "activation_density": 1.0, "direct_multiplies": 100, "winograd_multiplies": 50},
              {"name": "conv2", "kind": "conv3x3", "weight_density": density,
               "activation_density": 0.4, "direct_multiplies": 300, "winograd_multiplies": 150}]
    final = {"eval_accuracy": accuracy, "eval_examples": 10000, "train_examples": 60000,
             "multiplies_direct": 400, "multiplies_executed": 400,
             "multiplies_effective": 100 + 300 * density * 0.4, "layers": layers}
    record = {"arch": arch, "seed": seed, "method": method, "density": density, "final": final}
    if pruned is not None:
        record["after_pruning"] = {"eval_accuracy": pruned}
    return record


def test_claims_from_a_hand_made_study():
    # Dense 0.900 / 0.902 / 0.904 (std 0.002); spatial keeps it down to 0.4 and loses 1 point
    # at 0.1; winograd_relu holds down to 0.1.
    runs = []
    for seed in range(3):
        runs.append(_record("spatial", seed, "dense", 1.0, 0.900 + 0.002 * seed))
        runs.append(_record("winograd_relu", seed, "dense", 1.0, 0.900 + 0.002 * seed))
        for d, loss_spatial, loss_wr in ((0.6, 0.000, 0.0), (0.4, 0.002, 0.0),
                                         (0.25, 0.004, 0.001), (0.1, 0.010, 0.002)):
            runs.append(_record("spatial", seed, "one_shot", d,
                                0.900 + 0.002 * seed - loss_spatial, pruned=0.5))
            runs.append(_record("winograd_relu", seed, "one_shot", d,
                                0.900 + 0.002 * seed - loss_wr, pruned=0.6))
    claims = study_report.claims({"runs": runs})
    assert claims["spatial"]["lowest_density_holding"] == 0.4
    assert claims["spatial"]["first_density_losing_0.5"] == 0.1
    assert claims["winograd_relu"]["lowest_density_holding"] == 0.1
    assert claims["winograd_relu"]["first_density_losing_0.5"] is None
    # reduction = direct 400 / effective (100 + 300 * 0.1 * 0.4) at 0.1
    assert claims["winograd_relu"]["reduction_at_lowest_holding"] == pytest.approx(400 / 112)
    assert claims["spatial"]["dense_activation_density"][0] == pytest.approx(0.4)
    # A stand-in seed (3) whose dense model is 2 points below the others' and which alone has
    # a point at 0.05, losing 0.1 point against its own dense model: compared with its own
    # dense model it holds; against the mean of all dense models it would lose 1.6 points.
    runs.append(_record("winograd_relu", 3, "dense", 1.0, 0.880))
    runs.append(_record("winograd_relu", 3, "one_shot", 0.05, 0.879, pruned=0.5))
    claims = study_report.claims({"runs": runs})
    assert claims["winograd_relu"]["lowest_density_holding"] == 0.05
    assert claims["winograd_relu"]["first_density_losing_0.5"] is None
    runs.append(_record("winograd_relu", 3, "one_shot", 0.025, 0.872, pruned=0.5))
    assert study_report.claims({"runs": runs})["winograd_relu"]["first_density_losing_0.5"] \
        == 0.025
    rows = study_report.points({"runs": runs})
    row = next(r for r in rows if r["arch"] == "spatial" and r["density"] == 0.1)
    assert row["delta_vs_dense"][0] == pytest.approx(-0.010)
    assert row["accuracy"][1] == pytest.approx(0.002)
    assert "| spatial | one-shot | 0.1 | 3 |" in study_report.markdown_table({"runs": runs})
    per_seed = study_report.per_seed_table({"runs": runs}).splitlines()
    assert "| seed 0 | seed 1 | seed 2 | seed 3 |" in per_seed[0]
    # Seed 1's spatial 0.1: 50.00 right after pruning, 0.902 - 0.010 after; seed 3 has no run;
    # the mean of seeds 0-2 is 89.20, one point below their dense models.
    row = next(line for line in per_seed if line.startswith("| spatial | one-shot | 0.1 |"))
    assert "| 50.00 -> 89.00 | 50.00 -> 89.20 | 50.00 -> 89.40 |  | 89.20 | -1.00 |" in row, row
