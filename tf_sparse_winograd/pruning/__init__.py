"""Winograd-domain (and spatial) magnitude pruning for Keras 3 models, in tfmot's style.

Never imports tensorflow_model_optimization (importing it flips `tf.keras` to tf_keras); tfmot's
schedule objects are nevertheless accepted wherever a schedule is expected. The pruning view
(`walk_layers`, `unwrap`, `is_prunable`, `effective_kernel`, ...; see `view`) is how the rest of
the package looks at pruned models.
"""

from tf_sparse_winograd.pruning.prunable_layer import CRITERIA
from tf_sparse_winograd.pruning.prunable_layer import PrunableLayer
from tf_sparse_winograd.pruning.prunable_layer import get_prunable_weights
from tf_sparse_winograd.pruning.prunable_layer import register_layer
from tf_sparse_winograd.pruning.prune import prune_low_magnitude
from tf_sparse_winograd.pruning.prune import prune_scope
from tf_sparse_winograd.pruning.prune import prune_to_density
from tf_sparse_winograd.pruning.prune import strip_pruning
from tf_sparse_winograd.pruning.pruning_callbacks import PruningSummaries
from tf_sparse_winograd.pruning.pruning_callbacks import UpdatePruningStep
from tf_sparse_winograd.pruning.pruning_impl import keep_count
from tf_sparse_winograd.pruning.pruning_impl import magnitude_mask
from tf_sparse_winograd.pruning.pruning_schedule import ConstantSparsity
from tf_sparse_winograd.pruning.pruning_schedule import PolynomialDecay
from tf_sparse_winograd.pruning.pruning_schedule import PruningSchedule
from tf_sparse_winograd.pruning.pruning_wrapper import PruneLowMagnitude
from tf_sparse_winograd.pruning.report import LayerSparsity
from tf_sparse_winograd.pruning.report import SparsityReport
from tf_sparse_winograd.pruning.report import sparsity_report
from tf_sparse_winograd.pruning.view import check_model
from tf_sparse_winograd.pruning.view import collect_prunable_layers
from tf_sparse_winograd.pruning.view import effective_kernel
from tf_sparse_winograd.pruning.view import effective_weights
from tf_sparse_winograd.pruning.view import is_convolution
from tf_sparse_winograd.pruning.view import is_graph_model
from tf_sparse_winograd.pruning.view import is_prunable
from tf_sparse_winograd.pruning.view import masks
from tf_sparse_winograd.pruning.view import prunable_weights
from tf_sparse_winograd.pruning.view import unwrap
from tf_sparse_winograd.pruning.view import walk_layers
