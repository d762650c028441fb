"""The Fashion-MNIST study of issue 16: the paper's accuracy claims, multi-seed, joined with speed.

One command trains (or resumes) the whole grid with train.py, then writes one JSON of results:

  python experiments/sparse_winograd_study.py --root=/tmp/study --archive=experiments/study_archive
  python experiments/sparse_winograd_study.py --root=/tmp/study --archive=... --action=status
  python experiments/sparse_winograd_study.py --root=/tmp/study --archive=... --action=speed
  python report.py --study=docs/results/study/study.json --out_dir=docs/results/study

The grid (docs/results.md states the budget that was run):
  * architectures: 'spatial', 'winograd' and 'winograd_relu' at F(2x2, 3x3), 'winograd_relu_f4' at
    F(4x4, 3x3), VGG-nagadomi at --width, all 60,000 training and 10,000 test images;
  * per architecture and seed a dense phase of --dense_epochs (each seed trains its own dense
    model, so the seeds' spread includes the dense training);
  * one-shot magnitude pruning (the paper) of the dense model at each of --densities, retrained
    --retrain_epochs with the masks fixed;
  * gradual pruning (tfmot's PolynomialDecay, train.py --pruning=gradual) from the same dense
    model at --gradual_densities for --gradual_archs, over the same --retrain_epochs (so both
    methods have the same total epochs);
  * --seeds seeds for every point; --replacement_seed stands in for a seed on the points whose
    dense model's weights were lost (they cannot start from it), so they keep three seeds.

Every unit of work is one train.py process (its flags are written next to its checkpoints); a
unit whose results.json exists is skipped and an interrupted one resumes from its last epoch, so
rerunning the same command continues the sweep. With --archive (a directory committed with the
repository) every finished unit's results, and the weights that later units start from, are kept
there and restored into an empty --root, so the sweep also continues on a new machine.
--action=suspend (run with the sweep paused or stopped) adds the run directories of the units
not yet finished, checkpoints included, to the archive as <unit>.resume.tar.gz; they are restored
with the rest, so a unit interrupted with a machine resumes from its last epoch too. Units run
in priority order (spatial and winograd_relu first, seed by seed, so that the central comparison
completes first), --workers at a time.
The process group can be paused (kill -STOP -<pgid>) and resumed (kill -CONT) at any time.

--action=collect (also run after --action=train) gathers every results.json, the dense validation
curves (progress.jsonl) and the speed measurements into --out. --action=speed exports the
retrained models of one seed as sparse SavedModels and times them at batch 1 and 32 against the
dense spatial model in one interleaved run; it refuses to run while other processes load the
machine (pause the sweep first: it pauses the group in --pid_file itself with --pause_sweep).
"""

import collections
import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "train.py")

# kernel_gradient_scale: the F(2x2) architectures were trained with U's plain gradient, before
# 'transform' became the default (at F(2x2) the two differ by at most 1.8x per coordinate);
# F(4x4) diverges with the plain gradient at this learning rate and trains with 'transform'.
ARCHITECTURES = {
    "spatial": {"conv_type": "spatial", "tile_size": 2, "kernel_gradient_scale": "none"},
    "winograd": {"conv_type": "winograd", "tile_size": 2, "kernel_gradient_scale": "none"},
    "winograd_relu": {"conv_type": "winograd_relu", "tile_size": 2,
                      "kernel_gradient_scale": "none"},
    "winograd_relu_f4": {"conv_type": "winograd_relu", "tile_size": 4,
                         "kernel_gradient_scale": "transform"},
}
ACTIONS = ("train", "collect", "status", "speed", "suspend")

_ROOT = flags.DEFINE_string("root", None, "Study directory: runs/, logs/, speed.json.")
_ARCHIVE = flags.DEFINE_string(
    "archive", None,
    "A directory kept with the repository that holds every finished unit's results, the "
    "weights that later units (dense) or the speed pass (--speed_seed) start from, and the last "
    "speed pass's measurements. It is restored into --root before any action, so the sweep "
    "resumes on a machine whose --root is empty; a finished unit is added to it at once.")
_ACTION = flags.DEFINE_enum("action", "train", ACTIONS,
                            "train: run or resume the grid, then collect. collect: write the "
                            "JSON. status: print what is done. speed: the inference timing pass. "
                            "suspend: archive the unfinished units' run directories.")
_OUT = flags.DEFINE_string("out", None, "The results JSON (default <root>/study.json).")
_ARCHS = flags.DEFINE_list("archs", list(ARCHITECTURES), "Architectures, in priority order.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (at least 3 for the study).")
_DENSITIES = flags.DEFINE_list("densities", ["0.6", "0.4", "0.25", "0.1", "0.05"],
                               "One-shot pruning densities.")
_GRADUAL_ARCHS = flags.DEFINE_list("gradual_archs", ["winograd_relu", "spatial"],
                                   "Architectures pruned gradually too.")
_GRADUAL_DENSITIES = flags.DEFINE_list("gradual_densities", ["0.25", "0.1"],
                                       "Gradual pruning densities.")
_WIDTH = flags.DEFINE_float("width", 0.25, "VGG-nagadomi width.")
_DENSE_EPOCHS = flags.DEFINE_integer("dense_epochs", 30, "Dense training epochs.")
_RETRAIN_EPOCHS = flags.DEFINE_integer("retrain_epochs", 8,
                                       "Retraining epochs (one-shot and gradual).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.05,
                                    "Dense learning rate (cosine decay; retraining 0.1x).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 5e-4, "L2 on kernels.")
_ANALYSIS_BATCHES = flags.DEFINE_integer("analysis_batches", 16,
                                         "Test batches for the activation densities.")
_EXTRA_FLAGS = flags.DEFINE_list("extra_train_flags", [],
                                 "More train.py flags for every unit (e.g. --data_dir=...).")
_REPLACEMENT_SEED = flags.DEFINE_integer(
    "replacement_seed", None,
    "A seed not in --seeds that stands in for the units that cannot start because their dense "
    "model's weights were lost (e.g. seed 0's, lost with a machine before the archive existed): "
    "those points run with this seed, its dense models first, so that each still has 3 seeds.")
_WORKERS = flags.DEFINE_integer("workers", 1, "train.py processes run at the same time.")
_THREADS = flags.DEFINE_integer("threads", 0,
                                "TensorFlow intra-op threads per train.py (0: TF's default).")
_STATUS_FILE = flags.DEFINE_string("status_file", None,
                                   "A file that gets a one-line status as units start and end.")
_PID_FILE = flags.DEFINE_string("pid_file", None,
                                "train: write this process group id there. speed with "
                                "--pause_sweep: the group to pause while timing.")
_RESUME_HINT = flags.DEFINE_string("resume_hint", None,
                                   "What the status line says resumes the sweep (default: this "
                                   "script's command).")
_PAUSE_SWEEP = flags.DEFINE_bool("pause_sweep", False,
                                 "speed: SIGSTOP the process group in --pid_file while timing, "
                                 "SIGCONT after.")
_SPEED_SEED = flags.DEFINE_integer("speed_seed", 1,
                                   "speed: the seed whose models are timed (the archive keeps "
                                   "this seed's weights; seed 0's dense weights were lost).")
_SPEED_ROUNDS = flags.DEFINE_integer("speed_rounds", 7, "speed: interleaved rounds.")
_MAX_LOAD = flags.DEFINE_float("max_load", 0.5,
                               "speed: refuse to time while other processes use more than this "
                               "many CPUs (measured over 5 s).")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One train.py process: a dense phase, or one pruned point (one-shot or gradual)."""
    arch: str
    seed: int
    method: str  # 'dense', 'one_shot' or 'gradual'
    density: float = 1.0

    @property
    def name(self):
        if self.method == "dense":
            return f"{self.arch}-s{self.seed}-dense"
        return f"{self.arch}-s{self.seed}-{self.method}-d{self.density:g}"

    @property
    def depends_on(self):
        return None if self.method == "dense" else Unit(self.arch, self.seed, "dense")


def check_grid():
    """Validates the grid flags; raises ValueError naming the flag."""
    unknown = [a for a in _ARCHS.value + _GRADUAL_ARCHS.value if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"--archs/--gradual_archs must be among {list(ARCHITECTURES)}. "
                         f"Received: {unknown}")
    if len(set(_SEEDS.value)) < 3:
        raise ValueError(f"--seeds needs at least 3 distinct seeds (the study reports mean and "
                         f"standard deviation). Received: seeds={_SEEDS.value}")
    for name, values in (("densities", _DENSITIES.value),
                         ("gradual_densities", _GRADUAL_DENSITIES.value)):
        for value in values:
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"--{name} values must be in (0, 1]. Received: {value}")
    if _REPLACEMENT_SEED.value in {int(s) for s in _SEEDS.value}:
        raise ValueError(f"--replacement_seed must not be one of --seeds. Received: "
                         f"replacement_seed={_REPLACEMENT_SEED.value}, seeds={_SEEDS.value}")


def _seed_grid():
    """The units of --seeds, in the order they should run."""
    seeds = [int(s) for s in _SEEDS.value]
    densities = [float(d) for d in _DENSITIES.value]
    gradual = [float(d) for d in _GRADUAL_DENSITIES.value]
    units = []
    # The central comparison (spatial vs winograd_relu) first, one seed complete (dense, every
    # one-shot density, gradual) before the next, so that an interrupted sweep has whole seeds;
    # then the other architectures the same way.
    first = [a for a in _ARCHS.value if a in ("spatial", "winograd_relu")]
    stages = [first] + [[a] for a in _ARCHS.value if a not in first]
    for archs in stages:
        for s in seeds:
            units += [Unit(a, s, "dense") for a in archs]
            units += [Unit(a, s, "one_shot", d) for d in densities for a in archs]
            units += [Unit(a, s, "gradual", d) for d in gradual for a in archs
                      if a in _GRADUAL_ARCHS.value]
    return units


def grid(root):
    """All units, in the order they should run: those of --seeds, with each unit that cannot
    start for lost dense weights replaced by the same point with --replacement_seed (its dense
    unit right before the first of them) when that flag is set."""
    units = _seed_grid()
    if _REPLACEMENT_SEED.value is None:
        return units
    replaced = []
    for unit in units:
        if not is_done(root, unit) and blocked_by_lost_weights(root, unit):
            stand_in = Unit(unit.arch, _REPLACEMENT_SEED.value, unit.method, unit.density)
            if stand_in.depends_on not in replaced:
                replaced.append(stand_in.depends_on)
            replaced.append(stand_in)
        else:
            replaced.append(unit)
    return replaced


def model_dir(root, unit):
    return os.path.join(root, "runs", unit.arch, f"seed{unit.seed}")


def phase_dir(root, unit):
    directory = model_dir(root, unit)
    if unit.method == "dense":
        return os.path.join(directory, "dense")
    prefix = "gradual" if unit.method == "gradual" else "retrain"
    return os.path.join(directory, f"{prefix}_d{unit.density:g}")


def is_done(root, unit):
    return (os.path.exists(os.path.join(phase_dir(root, unit), "results.json"))
            or legacy_record(unit) is not None)


def has_weights(root, unit):
    return os.path.exists(os.path.join(phase_dir(root, unit), WEIGHTS_FILE))


# --------------------------------------------------------------------------------- the archive
# <archive>/<unit name>/ holds results.json, progress.jsonl and flags.json of the unit's phase,
# prune_results.json (one-shot: the accuracy right after pruning) and, for dense units and the
# speed seed, model.weights.h5.gz. A unit whose directory holds only record.json was collected
# before the archive existed: its JSON record is all that is left (no weights to continue from).
ARCHIVED_FILES = ("results.json", "progress.jsonl", "flags.json")
WEIGHTS_FILE = "model.weights.h5"
RESUME_SUFFIX = ".resume.tar.gz"
# The last speed pass's measurements, in --root and at the top of the archive.
SPEED_FILE = "speed.json"


def archive_dir(unit):
    return os.path.join(_ARCHIVE.value, unit.name) if _ARCHIVE.value else None


def resume_archive(unit):
    """Where --action=suspend keeps an unfinished unit's run directories."""
    return archive_dir(unit) + RESUME_SUFFIX


def legacy_record(unit):
    """The collected record of a unit archived without its files, or None."""
    directory = archive_dir(unit)
    path = directory and os.path.join(directory, "record.json")
    return _read_json(path) if path and os.path.exists(path) else None


def keeps_weights(unit):
    return unit.method == "dense" or unit.seed == _SPEED_SEED.value


def _prune_results(root, unit):
    return os.path.join(model_dir(root, unit), f"prune_d{unit.density:g}", "results.json")


def archive_unit(root, unit):
    """Copies a finished unit's files into the archive (written aside, then renamed into place)."""
    source, target = phase_dir(root, unit), archive_dir(unit)
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for name in ARCHIVED_FILES:
        if os.path.exists(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(partial, name))
    if unit.method == "one_shot" and os.path.exists(_prune_results(root, unit)):
        shutil.copyfile(_prune_results(root, unit), os.path.join(partial, "prune_results.json"))
    if keeps_weights(unit):
        with open(os.path.join(source, WEIGHTS_FILE), "rb") as f:
            # mtime=0: the same weights give the same bytes, so git sees no change on a re-run.
            with gzip.GzipFile(os.path.join(partial, WEIGHTS_FILE + ".gz"), "wb",
                               mtime=0) as out:
                shutil.copyfileobj(f, out)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(partial, target)
    if os.path.exists(resume_archive(unit)):
        os.remove(resume_archive(unit))


def _unit_dirs(root, unit):
    """The run directories an unfinished unit has written (a one-shot unit's prune phase too)."""
    dirs = [phase_dir(root, unit)]
    if unit.method == "one_shot":
        dirs.insert(0, os.path.dirname(_prune_results(root, unit)))
    return [d for d in dirs if os.path.isdir(d)]


def suspend(root):
    """Archives the run directories of the units begun but not finished, as <unit>.resume.tar.gz
    (written aside, then renamed into place); a finished unit's stale one is removed."""
    if not _ARCHIVE.value:
        raise app.UsageError("--action=suspend needs --archive.")
    for unit in grid(root):
        target = resume_archive(unit)
        if is_done(root, unit):
            if os.path.exists(target):
                os.remove(target)
            continue
        dirs = _unit_dirs(root, unit)
        if not any(os.path.isdir(os.path.join(d, "checkpoints")) for d in dirs):
            continue
        os.makedirs(_ARCHIVE.value, exist_ok=True)
        with tarfile.open(target + ".partial", "w:gz") as tar:
            for directory in dirs:
                tar.add(directory, arcname=os.path.relpath(directory, root),
                        filter=_latest_checkpoint_only(directory))
        os.replace(target + ".partial", target)
        print(f"suspended {unit.name} -> {target}")


def _latest_checkpoint_only(directory):
    """A tarfile filter that leaves out the checkpoints older than the one the state file names
    (the resume reads only that one; each is a few MB). An unreadable state file keeps them all."""
    from tf_sparse_winograd.training import checkpointing
    try:
        latest = checkpointing.state_checkpoint(directory)
    except checkpointing.CheckpointError:
        latest = None
    if latest is None:
        return lambda info: info
    keep_prefix = os.path.basename(latest) + "."

    def keep(info):
        name = os.path.basename(info.name)
        older = (os.path.basename(os.path.dirname(info.name)) == checkpointing.CHECKPOINT_DIR
                 and name != checkpointing.STATE_FILE and not name.startswith(keep_prefix))
        return None if older else info
    return keep


def _restore_suspended(root, unit):
    """Unpacks a unit's resume archive into --root unless --root has begun the unit itself."""
    source = resume_archive(unit)
    if not os.path.exists(source) or os.path.isdir(os.path.join(phase_dir(root, unit),
                                                                "checkpoints")):
        return
    with tarfile.open(source, "r:gz") as tar:
        tar.extractall(root, filter="data")


def restore_archive(root):
    """Writes the archived units that --root lacks into it; results.json last (it marks done).
    Units suspended unfinished are unpacked from their resume archives, and the last speed pass's
    measurements are copied back."""
    if not _ARCHIVE.value:
        return
    archived_speed = os.path.join(_ARCHIVE.value, SPEED_FILE)
    if os.path.exists(archived_speed) and not os.path.exists(os.path.join(root, SPEED_FILE)):
        os.makedirs(root, exist_ok=True)
        shutil.copyfile(archived_speed, os.path.join(root, SPEED_FILE))
    for unit in grid(root):
        if not os.path.isdir(archive_dir(unit)):
            _restore_suspended(root, unit)
    for unit in grid(root):
        source, target = archive_dir(unit), phase_dir(root, unit)
        if (not os.path.isdir(source) or legacy_record(unit) is not None
                or os.path.exists(os.path.join(target, "results.json"))):
            continue
        os.makedirs(target, exist_ok=True)
        weights = os.path.join(source, WEIGHTS_FILE + ".gz")
        if os.path.exists(weights):
            with gzip.open(weights, "rb") as f, open(os.path.join(target, WEIGHTS_FILE),
                                                     "wb") as out:
                shutil.copyfileobj(f, out)
        if os.path.exists(os.path.join(source, "prune_results.json")):
            os.makedirs(os.path.dirname(_prune_results(root, unit)), exist_ok=True)
            shutil.copyfile(os.path.join(source, "prune_results.json"),
                            _prune_results(root, unit))
        for name in sorted(ARCHIVED_FILES, key=lambda n: n == "results.json"):
            if os.path.exists(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(target, name))


def archive_finished(root):
    """Archives the units done in --root but not yet in the archive (e.g. after a kill)."""
    if not _ARCHIVE.value:
        return
    for unit in grid(root):
        if (os.path.exists(os.path.join(phase_dir(root, unit), "results.json"))
                and not os.path.isdir(archive_dir(unit))):
            archive_unit(root, unit)


def blocked_by_lost_weights(root, unit):
    """A pruned unit whose dense model is done but whose weights were not kept."""
    dense = unit.depends_on
    return dense is not None and is_done(root, dense) and not has_weights(root, dense)


def train_flags(root, unit):
    """The train.py command line of a unit."""
    arch = ARCHITECTURES[unit.arch]
    args = [f"--conv_type={arch['conv_type']}", f"--tile_size={arch['tile_size']}",
            f"--kernel_gradient_scale={arch['kernel_gradient_scale']}",
            f"--width={_WIDTH.value}", f"--seed={unit.seed}",
            f"--model_dir={model_dir(root, unit)}", "--dataset=fashion_mnist",
            "--data_source=idx",
            "--max_train_examples=0", "--max_eval_examples=0",
            f"--epochs={_DENSE_EPOCHS.value},{_RETRAIN_EPOCHS.value}",
            f"--learning_rate={_LEARNING_RATE.value}", "--lr_schedule=cosine",
            f"--batch_size={_BATCH_SIZE.value}", f"--weight_decay={_WEIGHT_DECAY.value}",
            f"--analysis_batches={_ANALYSIS_BATCHES.value}", "--steps_per_execution=8",
            "--verbose=2"]
    if unit.method == "dense":
        args.append("--phase=dense")
    else:
        args += [f"--density={unit.density:g}", "--phase=all",
                 f"--pruning={unit.method}"]
    return args + list(_EXTRA_FLAGS.value)


def write_status(text):
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}"
    print(line, flush=True)
    if _STATUS_FILE.value:
        with open(_STATUS_FILE.value, "w") as f:
            f.write(line + "\n")


def _resume_hint(root):
    if _RESUME_HINT.value:
        return f"resume: {_RESUME_HINT.value}"
    return (f"resume: cd {REPO} && python experiments/sparse_winograd_study.py --root={root} "
            f"(same flags)")


def run_grid(root):
    """Runs every unit not yet done, --workers at a time, dependencies first."""
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    if _PID_FILE.value:
        with open(_PID_FILE.value, "w") as f:
            f.write(f"{os.getpgid(0)}\n")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _THREADS.value:
        env["TF_NUM_INTRAOP_THREADS"] = str(_THREADS.value)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    archive_finished(root)
    pending = [u for u in grid(root) if not is_done(root, u)]
    lost = [u for u in pending if blocked_by_lost_weights(root, u)]
    if lost:
        write_status(f"study: {len(lost)} units cannot start, their dense model's weights were "
                     f"not kept: {', '.join(u.name for u in lost)}")
    pending = [u for u in pending if u not in lost]
    running, failed = {}, set()
    total = len(grid(root))
    while pending or running:
        for unit, proc in list(running.items()):
            if proc.poll() is not None:
                del running[unit]
                if proc.returncode != 0 or not is_done(root, unit):
                    failed.add(unit)
                    write_status(f"study: {unit.name} failed (exit {proc.returncode}); see "
                                 f"{root}/logs/{unit.name}.log")
                elif _ARCHIVE.value:
                    archive_unit(root, unit)
        blocked = {u for u in pending if u.depends_on in failed}
        pending = [u for u in pending if u not in blocked]
        failed |= blocked
        busy_dirs = {model_dir(root, u) for u in running if u.method == "dense"}
        ready = [u for u in pending if (u.depends_on is None or is_done(root, u.depends_on))
                 and model_dir(root, u) not in busy_dirs]
        while ready and len(running) < max(1, _WORKERS.value):
            unit = ready.pop(0)
            pending.remove(unit)
            log = open(os.path.join(root, "logs", f"{unit.name}.log"), "a")
            log.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} python train.py "
                      + " ".join(train_flags(root, unit)) + "\n")
            log.flush()
            running[unit] = subprocess.Popen([sys.executable, TRAIN_PY] + train_flags(root, unit),
                                             cwd=REPO, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
            busy_dirs.add(model_dir(root, unit))
            done = sum(is_done(root, u) for u in grid(root))
            write_status(f"study running (pgid {os.getpgid(0)}): {done}/{total} units done; "
                         f"now {', '.join(u.name for u in running)}; {_resume_hint(root)}")
        if not running and pending:  # nothing can start: dependencies failed
            break
        time.sleep(5)
    done = sum(is_done(root, u) for u in grid(root))
    write_status(f"study stopped: {done}/{total} units done, {len(failed)} failed this run"
                 + (f" ({', '.join(sorted(u.name for u in failed))})" if failed else "")
                 + f"; {_resume_hint(root)}")
    return not failed


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def dense_curve(root, unit):
    """[(epoch, val_accuracy, val_loss, accuracy, seconds since the previous epoch end)]."""
    from tf_sparse_winograd.training import checkpointing
    legacy = legacy_record(unit)
    if legacy is not None:
        return legacy.get("curve" if unit.method == "dense" else "retrain_curve", [])
    records = checkpointing.read_progress(phase_dir(root, unit))
    curve, last_time = [], None
    for r in records:
        if r["event"] == "start":
            last_time = r["time"]
        elif r["event"] == "epoch_end":
            curve.append({"epoch": r["epoch"], "val_accuracy": r.get("val_accuracy"),
                          "val_loss": r.get("val_loss"), "accuracy": r.get("accuracy"),
                          "seconds": r["time"] - last_time if last_time else None})
            last_time = r["time"]
    return curve


def _layers(results):
    return [{k: layer.get(k) for k in ("name", "kind", "weight_density", "activation_density",
                                       "activation_density_std", "direct_multiplies",
                                       "winograd_multiplies", "effective_multiplies")}
            for layer in results["multiplies"]["layers"]]


def _summary(results):
    m = results["multiplies"]
    return {"eval_accuracy": results["eval_accuracy"], "eval_loss": results["eval_loss"],
            "eval_examples": results["eval_examples"],
            "eval_split": results.get("eval_split", "test"),
            "train_examples": results["train_examples"], "epochs": results["epochs"],
            "multiplies_direct": m["total_direct"], "multiplies_executed": m["total_executed"],
            "multiplies_effective": m["total_effective"], "layers": _layers(results)}


def code_version():
    """The commit of the repository the study runs from (and whether files differ from it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return commit + (" (modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def collect(root):
    """The study's JSON: configuration, one record per unit done, dense curves, speed."""
    records = []
    for unit in grid(root):
        if not is_done(root, unit):
            continue
        if legacy_record(unit) is not None:
            records.append(legacy_record(unit))
            continue
        record = {"arch": unit.arch, "seed": unit.seed, "method": unit.method,
                  "density": unit.density, **ARCHITECTURES[unit.arch]}
        final = _read_json(os.path.join(phase_dir(root, unit), "results.json"))
        record["final"] = _summary(final)
        if unit.method == "dense":
            record["curve"] = dense_curve(root, unit)
        else:
            record["sparsity"] = final.get("sparsity")
            if unit.method == "one_shot" and os.path.exists(_prune_results(root, unit)):
                record["after_pruning"] = _summary(_read_json(_prune_results(root, unit)))
            record["retrain_curve"] = dense_curve(root, unit)
            if unit.method == "gradual":
                record["gradual_end_step"] = final.get("gradual_end_step")
                record["gradual_frequency"] = final.get("gradual_frequency")
        records.append(record)
    units = grid(root)
    study = {
        "config": {"archs": {a: ARCHITECTURES[a] for a in _ARCHS.value},
                   "seeds": [int(s) for s in _SEEDS.value],
                   "densities": [float(d) for d in _DENSITIES.value],
                   "gradual_archs": list(_GRADUAL_ARCHS.value),
                   "gradual_densities": [float(d) for d in _GRADUAL_DENSITIES.value],
                   "width": _WIDTH.value, "dense_epochs": _DENSE_EPOCHS.value,
                   "retrain_epochs": _RETRAIN_EPOCHS.value,
                   "learning_rate": _LEARNING_RATE.value, "batch_size": _BATCH_SIZE.value,
                   "weight_decay": _WEIGHT_DECAY.value,
                   "analysis_batches": _ANALYSIS_BATCHES.value,
                   "extra_train_flags": list(_EXTRA_FLAGS.value),
                   "command": "python experiments/sparse_winograd_study.py " + " ".join(
                       a for a in sys.argv[1:] if not a.startswith("--action")),
                   "code": code_version()},
        "progress": {"units": len(units), "done": len(records),
                     "pending": [u.name for u in units if not is_done(root, u)]},
        "runs": records,
    }
    speed_path = os.path.join(root, SPEED_FILE)
    if os.path.exists(speed_path):
        study["speed"] = _read_json(speed_path)
    out = _OUT.value or os.path.join(root, "study.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(study, f, indent=1)
    print(f"Wrote {out}: {len(records)}/{len(units)} units")
    return study


def status(root):
    """Prints what is done and an estimate of the CPU time left (from the epochs measured)."""
    units = grid(root)
    done = [u for u in units if is_done(root, u)]
    epoch_seconds = collections.defaultdict(list)
    for unit in done:
        for point in dense_curve(root, unit):
            if point["seconds"]:
                epoch_seconds[(unit.arch, unit.method == "dense")].append(point["seconds"])
    left = 0.0
    for unit in units:
        if unit in done:
            continue
        epochs = _DENSE_EPOCHS.value if unit.method == "dense" else _RETRAIN_EPOCHS.value
        measured = (epoch_seconds.get((unit.arch, unit.method == "dense"))
                    or epoch_seconds.get((unit.arch, True)) or [120.0])
        left += epochs * sorted(measured)[len(measured) // 2]
    print(f"{len(done)}/{len(units)} units done. Pending: "
          + ", ".join(u.name for u in units if u not in done))
    lost = [u for u in units if u not in done and blocked_by_lost_weights(root, u)]
    if lost:
        print("Cannot start (the dense model's weights were not kept): "
              + ", ".join(u.name for u in lost))
    print(f"Estimated time left: {left / 3600:.1f} hours of one train.py process at the median "
          "epoch time measured so far (wall time, including any load or pauses then)")


# ----------------------------------------------------------------------------------- speed pass
def _process_cpu_seconds(exclude_pgids):
    """Total CPU seconds used so far by processes outside `exclude_pgids` (from /proc)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pgid = int(fields[2])
        if pgid in exclude_pgids:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def other_load(exclude_pgids, seconds=5.0):
    """CPUs used by other processes over `seconds` (processes that end meanwhile are missed)."""
    before = _process_cpu_seconds(exclude_pgids)
    time.sleep(seconds)
    return (_process_cpu_seconds(exclude_pgids) - before) / seconds


def speed(root):
    """Times the exported sparse SavedModels of one seed against the dense spatial model."""
    import signal
    sweep_pgid = None
    if _PAUSE_SWEEP.value:
        if not _PID_FILE.value or not os.path.exists(_PID_FILE.value):
            raise ValueError("--pause_sweep needs --pid_file with the sweep's process group id.")
        sweep_pgid = int(open(_PID_FILE.value).read().split()[0])
        os.killpg(sweep_pgid, signal.SIGSTOP)
    try:
        mine = {os.getpgid(0)} | ({sweep_pgid} if sweep_pgid else set())
        load = other_load(mine)
        if load > _MAX_LOAD.value:
            raise RuntimeError(f"Other processes use {load:.2f} CPUs (over 5 s); the speed pass "
                               f"needs an idle machine (--max_load={_MAX_LOAD.value}). Pause the "
                               "sweep (--pause_sweep) and retry when the machine is quiet.")
        measurements = _time_exports(root, load)
        measurements["other_load_after"] = other_load(mine)
    finally:
        if sweep_pgid:
            os.killpg(sweep_pgid, signal.SIGCONT)
    targets = [os.path.join(root, SPEED_FILE)]
    if _ARCHIVE.value:
        os.makedirs(_ARCHIVE.value, exist_ok=True)
        targets.append(os.path.join(_ARCHIVE.value, SPEED_FILE))
    for target in targets:
        with open(target, "w") as f:
            json.dump(measurements, f, indent=1)
        print(f"Wrote {target}")


def _time_exports(root, load_before):
    """Exports the speed seed's models into a temporary directory (removed after) and times them."""
    import importlib.util
    import tempfile
    spec = importlib.util.spec_from_file_location(
        "interleaved", os.path.join(REPO, "bench", "interleaved.py"))
    interleaved = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(interleaved)
    workdir = tempfile.mkdtemp(prefix="study_speed_")
    try:
        return _time_exports_in(root, load_before, workdir, interleaved)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _time_exports_in(root, load_before, workdir, interleaved):
    """The speed pass's measurements, its exports written under `workdir`."""
    import numpy as np
    import tensorflow as tf
    from tf_sparse_winograd import export
    from tf_sparse_winograd.training import config as config_lib
    from tf_sparse_winograd.training import phases
    seed = _SPEED_SEED.value
    threads = _THREADS.value or 2
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    variants = {}

    def config_of(unit):
        arch = ARCHITECTURES[unit.arch]
        return config_lib.TrainConfig(
            conv_type=arch["conv_type"], tile_size=arch["tile_size"], width=_WIDTH.value,
            seed=seed, model_dir=model_dir(root, unit), density=(unit.density,),
            pruning="gradual" if unit.method == "gradual" else "one_shot")

    reference = Unit("spatial", seed, "dense")
    if not has_weights(root, reference):
        raise FileNotFoundError(f"The dense spatial model of seed {seed} is not trained (or its "
                                "weights were not kept).")
    units = [u for u in grid(root) if u.seed == seed and has_weights(root, u)]
    for unit in units:
        model = phases.restore_model(config_of(unit), "dense" if unit.method == "dense"
                                     else "retrain")
        path = os.path.join(workdir, unit.name)
        # The spatial models run as plain TF (no sparse kernel exists for spatial convolutions).
        export.export_saved_model(model, path, convert=unit.arch != "spatial")
        variants[unit.name] = interleaved.serving_function(path)
    rng = np.random.default_rng(0)
    results = {"cpu": interleaved.cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
               "tensorflow": tf.__version__, "seed": seed, "rounds": _SPEED_ROUNDS.value,
               "reference": reference.name, "other_load_before": load_before,
               "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "batches": {}}
    names = list(variants)
    for batch in (1, 32):
        x = tf.constant(rng.normal(size=(batch, 28, 28, 1)).astype(np.float32))

        def sampler(name, x=x):
            variants[name](x)  # warm
            return interleaved.time_per_call(variants[name], x, min_seconds=0.3)

        timed = interleaved.measure([lambda n=n: sampler(n) for n in names], _SPEED_ROUNDS.value)
        ref_best = dict(zip(names, timed))[reference.name][0]
        results["batches"][str(batch)] = {
            name: {"best_ms": best * 1e3, "median_ms": median * 1e3,
                   "speedup_vs_dense_spatial": ref_best / best}
            for name, (best, median) in zip(names, timed)}
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not _ROOT.value:
        raise app.UsageError("--root is required: the study directory.")
    check_grid()
    root = os.path.abspath(_ROOT.value)
    restore_archive(root)
    if _ACTION.value == "train":
        ok = run_grid(root)
        collect(root)
        if not ok:
            sys.exit(1)
    elif _ACTION.value == "collect":
        collect(root)
    elif _ACTION.value == "status":
        status(root)
    elif _ACTION.value == "speed":
        speed(root)
    elif _ACTION.value == "suspend":
        suspend(root)


if __name__ == "__main__":
    app.run(main)
