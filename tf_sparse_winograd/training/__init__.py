"""Library logic behind train.py: the three phases, checkpoints and resuming, strategies."""

from tf_sparse_winograd.training.checkpointing import CheckpointError
from tf_sparse_winograd.training.checkpointing import read_progress
from tf_sparse_winograd.training.config import PHASES
from tf_sparse_winograd.training.config import TrainConfig
from tf_sparse_winograd.training.config import parse_list
from tf_sparse_winograd.training.config import write_flags
from tf_sparse_winograd.training.phases import Runner
from tf_sparse_winograd.training.phases import run
