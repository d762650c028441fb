"""`TrainConfig`: everything a training run needs, independent of how it was given (flags, tests)."""

import dataclasses
import json
import os

from tf_sparse_winograd.pruning import prunable_layer

PHASES = ("dense", "prune", "retrain")
PHASE_CHOICES = PHASES + ("all",)
STRATEGIES = ("default", "mirrored", "multi_worker")
LR_SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("sgd", "adam")
PRUNING_METHODS = ("one_shot", "gradual")
KERNEL_GRADIENT_SCALES = ("transform", "none")  # WinogradConv2D's: 'none' is its None.
PRUNE_CRITERIA = prunable_layer.CRITERIA


@dataclasses.dataclass
class TrainConfig:
    """A training run. See train.py's flags for the meaning of each field."""
    model: str = "vgg_nagadomi"
    dataset: str = "fashion_mnist"
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    data_source: str = "auto"
    tfds_data_dir: str = None
    download: bool = False
    conv_type: str = "winograd_relu"
    tile_size: int = 2
    kernel_gradient_scale: str = "transform"
    width: float = 0.25
    phase: str = "all"
    density: tuple = (0.4,)
    prune_first_conv: bool = False
    prune_dense: bool = False
    prune_filter_block: int = 1
    prune_criterion: str = "magnitude"
    pruning: str = "one_shot"
    epochs: tuple = (2, 1)
    batch_size: int = 64
    learning_rate: float = 0.05
    lr_schedule: str = "cosine"
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    # A hyphen: a directory named like the package in /tmp would shadow it for Python run there.
    model_dir: str = "/tmp/tf-sparse-winograd/run"
    export_dir: str = None
    seed: int = 0
    max_train_examples: int = 6000
    max_eval_examples: int = 2000
    holdout_examples: int = 0
    analysis_batches: int = 4
    strategy: str = "default"
    jit_compile: bool = False
    steps_per_execution: int = 1
    verbose: int = 1

    def __post_init__(self):
        self.density = tuple(float(d) for d in self.density)
        self.epochs = tuple(int(e) for e in self.epochs)
        if not self.density or any(not 0.0 < d <= 1.0 for d in self.density):
            raise ValueError(f"`density` values must be in (0, 1]. Received: density={self.density}")
        if len(self.epochs) not in (1, 2) or any(e < 0 for e in self.epochs):
            raise ValueError("`epochs` must be one value (dense and retrain) or two (dense, "
                             f"retrain), each >= 0. Received: epochs={self.epochs}")
        for name, value, choices in (("phase", self.phase, PHASE_CHOICES),
                                     ("strategy", self.strategy, STRATEGIES),
                                     ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("pruning", self.pruning, PRUNING_METHODS),
                                     ("prune_criterion", self.prune_criterion, PRUNE_CRITERIA),
                                     ("kernel_gradient_scale", self.kernel_gradient_scale,
                                      KERNEL_GRADIENT_SCALES)):
            if value not in choices:
                raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")
        if self.batch_size <= 0:
            raise ValueError(f"`batch_size` must be positive. Received: {self.batch_size}")
        for name in ("holdout_examples", "steps_per_execution"):
            value = getattr(self, name)
            low = 1 if name == "steps_per_execution" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
        if isinstance(self.prune_filter_block, bool) or not isinstance(self.prune_filter_block, int) \
                or self.prune_filter_block < 1:
            raise ValueError("`prune_filter_block` must be an integer >= 1. Received: "
                             f"prune_filter_block={self.prune_filter_block!r}")

    def epochs_for(self, phase):
        if phase == "prune":
            return 0
        return self.epochs[0] if phase == "dense" or len(self.epochs) == 1 else self.epochs[1]

    @property
    def density_tag(self):
        """Names the prune/retrain directories: 'd0.4', or 'd0.5-0.4-...' for per-layer values;
        '-b4' appended when filters are pruned in blocks of 4, '-normalized' under the
        normalized magnitude criterion (so no run resumes another's)."""
        tag = "d" + "-".join(f"{d:g}" for d in self.density)
        if self.prune_filter_block != 1:
            tag += f"-b{self.prune_filter_block}"
        return tag + ("-normalized" if self.prune_criterion == "normalized_magnitude" else "")

    @property
    def phases(self):
        """The phases `phase='all'` runs: gradual pruning has no separate prune phase."""
        if self.pruning == "gradual":
            return ("dense", "retrain")
        return PHASES

    def phase_dir(self, phase):
        """dense/, prune_<tag>/, retrain_<tag>/; gradual pruning retrains in gradual_<tag>/."""
        if phase == "dense":
            return os.path.join(self.model_dir, "dense")
        if self.pruning == "gradual":
            if phase == "prune":
                raise ValueError("Gradual pruning (pruning='gradual') has no 'prune' phase: it "
                                 "prunes while it retrains (phase 'retrain').")
            phase = "gradual"
        return os.path.join(self.model_dir, f"{phase}_{self.density_tag}")

    def as_dict(self):
        return dataclasses.asdict(self)


def parse_list(text, kind=float):
    """'0.4' -> (0.4,); '0.5,0.4' -> (0.5, 0.4). Accepts lists as they are."""
    if isinstance(text, (list, tuple)):
        return tuple(kind(t) for t in text)
    return tuple(kind(t) for t in str(text).replace(" ", "").split(",") if t)


def write_flags(directory, values):
    """Writes the effective flags as a flagfile (flags.txt, usable with --flagfile) and flags.json."""
    os.makedirs(directory, exist_ok=True)
    lines = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"--{name}=" + ",".join(str(v) for v in value))
        else:
            lines.append(f"--{name}={value}")
    with open(os.path.join(directory, "flags.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "flags.json"), "w") as f:
        json.dump(values, f, indent=2, sort_keys=True, default=list)
