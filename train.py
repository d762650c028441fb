"""Trains, prunes and retrains a sparse-Winograd CNN (Liu et al. 2018), offline by default.

  python train.py                       # Fashion-MNIST, VGG-nagadomi/4, winograd_relu, density 0.4
  python train.py --conv_type=spatial --density=0.6 --model_dir=/tmp/run
  python train.py --phase=retrain --flagfile=/tmp/run/dense/flags.txt

See docs/training.md. The logic lives in tf_sparse_winograd.training.
"""

import sys

from absl import app
from absl import flags

from tf_sparse_winograd.training import config as config_lib

_D = config_lib.TrainConfig()

flags.DEFINE_enum("model", _D.model, ["vgg_nagadomi", "convpool_cnn_c", "resnet18"], "Network.")
flags.DEFINE_enum("dataset", _D.dataset, ["fashion_mnist", "cifar10", "cifar100"], "Dataset.")
flags.DEFINE_string("data_dir", _D.data_dir,
                    "Directory of the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist), "
                    "used when tensorflow-datasets has no fashion_mnist.")
flags.DEFINE_enum("data_source", _D.data_source, ["auto", "tfds", "idx"],
                  "Where data comes from: tfds, the IDX files, or auto (tfds, then IDX).")
flags.DEFINE_string("tfds_data_dir", _D.tfds_data_dir, "tensorflow-datasets data_dir.")
flags.DEFINE_bool("download", _D.download, "Let tensorflow-datasets download (needs a network).")
flags.DEFINE_enum("conv_type", _D.conv_type, ["spatial", "winograd", "winograd_relu"],
                  "Figure 1 architecture: spatial conv, Winograd-domain weights, or Winograd-"
                  "domain weights and ReLU.")
flags.DEFINE_integer("tile_size", _D.tile_size, "Winograd output tile m of F(m x m, 3 x 3).")
flags.DEFINE_enum("kernel_gradient_scale", _D.kernel_gradient_scale, ["transform", "none"],
                  "Winograd types: 'transform' scales the gradient of each Winograd-domain "
                  "weight so that a learning rate that suits spatial training suits F(4x4) too "
                  "(WinogradConv2D's default); 'none' keeps the plain gradient, which diverges "
                  "at F(4x4) with such learning rates.")
flags.DEFINE_float("width", _D.width, "Channel multiplier of the network (1.0 = the paper's).")
flags.DEFINE_enum("phase", _D.phase, ["dense", "prune", "retrain", "all"], "Phase(s) to run.")
flags.DEFINE_list("density", [str(d) for d in _D.density],
                  "Density kept by pruning: one value for every pruned layer, or one per pruned "
                  "layer (the first conv is not pruned).")
flags.DEFINE_bool("prune_first_conv", _D.prune_first_conv, "Also prune the first convolution.")
flags.DEFINE_bool("prune_dense", _D.prune_dense, "Also prune the fully connected layers.")
flags.DEFINE_integer("prune_filter_block", _D.prune_filter_block,
                     "Prune blocks of this many consecutive filters (output units) together per "
                     "weight position; 4 lets the sparse op run 4 filters at a time. 1: single "
                     "weights (the paper).")
flags.DEFINE_enum("prune_criterion", _D.prune_criterion, list(config_lib.PRUNE_CRITERIA),
                  "magnitude: keep the largest |w| (the paper). normalized_magnitude: keep the "
                  "largest |U_ij| / (|G_i| |G_j|) in Winograd layers, so that F(4x4) and F(6x6) "
                  "do not lose whole Winograd coordinates to their transform's scale at low "
                  "density (docs/results.md); spatial and dense layers rank by |w| either way.")
flags.DEFINE_enum("pruning", _D.pruning, ["one_shot", "gradual"],
                  "one_shot: prune the dense model to the density at once, then retrain with the "
                  "masks fixed (the paper). gradual: raise the sparsity from 0 along tfmot's "
                  "PolynomialDecay over the first half of the retraining epochs, masks fixed "
                  "after (run directory gradual_d<density>).")
flags.DEFINE_list("epochs", [str(e) for e in _D.epochs],
                  "Epochs per phase: 'N' (dense and retrain) or 'N_dense,N_retrain'.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size.")
flags.DEFINE_float("learning_rate", _D.learning_rate,
                   "Initial learning rate of the dense phase (retraining uses 0.1x).")
flags.DEFINE_enum("lr_schedule", _D.lr_schedule, ["constant", "cosine", "step"],
                  "Learning-rate schedule over each phase (step: x0.1 at 50% and 75%).")
flags.DEFINE_enum("optimizer", _D.optimizer, ["sgd", "adam"], "SGD (Nesterov 0.9) or Adam.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "L2 factor on kernels (U for Winograd).")
flags.DEFINE_string("model_dir", _D.model_dir, "Run directory: one subdirectory per phase.")
flags.DEFINE_string("export_dir", _D.export_dir, "Export the retrained model as a SavedModel.")
flags.DEFINE_integer("seed", _D.seed, "Random seed.")
flags.DEFINE_integer("max_train_examples", _D.max_train_examples,
                     "Train on the first N examples only (0: all).")
flags.DEFINE_integer("max_eval_examples", _D.max_eval_examples,
                     "Evaluate on the first N test examples only (0: all).")
flags.DEFINE_integer("holdout_examples", _D.holdout_examples,
                     "Set this many training examples aside (a fixed random subset) and evaluate "
                     "on them instead of the test split: for tuning (0: evaluate on the test "
                     "split).")
flags.DEFINE_integer("analysis_batches", _D.analysis_batches,
                     "Test batches used to measure activation densities (0: do not measure).")
flags.DEFINE_enum("strategy", _D.strategy, ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: one device, all local devices, or TF_CONFIG workers.")
flags.DEFINE_bool("jit_compile", _D.jit_compile,
                  "Compile each training step with XLA (model.compile(jit_compile=...)).")
flags.DEFINE_integer("steps_per_execution", _D.steps_per_execution,
                     "Training steps run per call into the compiled function (fewer Python "
                     "round trips; callbacks see one batch per call).")
flags.DEFINE_integer("verbose", _D.verbose, "Keras fit verbosity (1: progress bars).")

FLAGS = flags.FLAGS
_NAMES = [f.name for f in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from tf_sparse_winograd import training
    values = {name: FLAGS[name].value for name in _NAMES}
    config = training.TrainConfig(**dict(
        values, density=training.parse_list(FLAGS.density, float),
        epochs=training.parse_list(FLAGS.epochs, int),
        max_train_examples=FLAGS.max_train_examples or None,
        max_eval_examples=FLAGS.max_eval_examples or None))
    try:
        results = training.run(config, flag_values=values)
    except training.CheckpointError as error:  # a run directory it must not train over
        sys.exit(f"train.py: {error}")
    last = results[list(results)[-1]]
    print(f"\nFinal ({config.conv_type}, density {','.join(map(str, config.density))}): "
          f"eval accuracy {last['eval_accuracy']:.4f}, multiplies per image "
          f"{last['multiplies']['total_effective']:.3e} effective vs "
          f"{last['multiplies']['total_direct']:.3e} dense direct")


if __name__ == "__main__":
    app.run(main)
