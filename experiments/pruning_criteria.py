"""Which Winograd coordinates one-shot pruning keeps, and the accuracy right after it, by criterion.

For a dense model the study trained (`sparse_winograd_study.py`), prunes every layer the study
prunes to each --densities value under the "magnitude" (the paper) and "normalized_magnitude"
criteria (`tf_sparse_winograd.pruning.prune_to_density(..., criterion=...)`), and reports, without
retraining:

  * accuracy on the first --examples training images (never the test split: the criteria are
    compared here, so the test split is kept for the study's own numbers);
  * how many of the a x a Winograd coordinates of each pruned layer keep no weight at all, and
    the kept fraction per coordinate, averaged over the pruned layers.

At F(4x4) the trained U follows the transform's scale |G_i| |G_j| (0.036 to 1), so plain magnitude
pruning empties the coordinates of G's short rows first, whole; the normalized criterion ranks
|U_ij| / (|G_i| |G_j|). One JSON line per model on stdout, a table on stderr.

  python experiments/pruning_criteria.py --runs=<study root>/runs --arch=winograd_relu_f4 --seed=1
"""

import json
import sys

from absl import app
from absl import flags
import numpy as np

_RUNS = flags.DEFINE_string("runs", None, "The study's runs directory (<root>/runs).",
                            required=True)
_ARCH = flags.DEFINE_enum("arch", "winograd_relu_f4",
                          ["winograd_relu", "winograd_relu_f4", "winograd"],
                          "The study's architecture name.")
_SEED = flags.DEFINE_integer("seed", 1, "The study seed whose dense model is pruned.")
_DENSITIES = flags.DEFINE_list("densities", ["0.25", "0.1", "0.05"], "Densities to prune to.")
_EXAMPLES = flags.DEFINE_integer("examples", 10000, "Training images evaluated.")

_TILE_SIZE = {"winograd_relu": 2, "winograd_relu_f4": 4, "winograd": 2}


def main(argv):
    del argv
    import keras
    from tf_sparse_winograd import data
    from tf_sparse_winograd import pruning
    from tf_sparse_winograd.training import config as config_lib
    from tf_sparse_winograd.training import phases

    conv_type = "winograd" if _ARCH.value == "winograd" else "winograd_relu"
    config = config_lib.TrainConfig(conv_type=conv_type, tile_size=_TILE_SIZE[_ARCH.value],
                                    width=0.25, seed=_SEED.value,
                                    model_dir=f"{_RUNS.value}/{_ARCH.value}/seed{_SEED.value}")
    dense = phases.restore_model(config, "dense")
    dataset, _ = data.load_dataset(config.dataset, "train", 500, max_examples=_EXAMPLES.value,
                                  source=config.data_source, data_dir=config.data_dir)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    names = phases.prunable_candidates(dense, config)

    def accuracy(model):
        model.compile(loss=loss, metrics=["accuracy"])
        return float(model.evaluate(dataset, verbose=0)[1])

    result = {"arch": _ARCH.value, "seed": _SEED.value, "examples": _EXAMPLES.value,
              "dense_accuracy": accuracy(dense), "pruned": []}
    for density in (float(d) for d in _DENSITIES.value):
        for criterion in pruning.CRITERIA:
            pruned = pruning.prune_to_density(dense, {name: density for name in names},
                                              skip_first_conv=False, criterion=criterion)
            kept = np.stack([np.asarray(pruning.masks(layer)[0]).mean(axis=(2, 3))
                             for layer in pruning.collect_prunable_layers(pruned)])
            result["pruned"].append({
                "density": density, "criterion": criterion, "accuracy": accuracy(pruned),
                "empty_coordinates_per_layer": [int(n) for n in (kept == 0).sum(axis=(1, 2))],
                "coordinate_count": int(kept[0].size),
                "kept_fraction_by_coordinate": np.round(kept.mean(axis=0), 3).tolist()})
            row = result["pruned"][-1]
            print(f"{_ARCH.value} seed {_SEED.value} d={density:g} {criterion:>20}: "
                  f"{100 * row['accuracy']:.2f}% (dense {100 * result['dense_accuracy']:.2f}%), "
                  f"empty coordinates per layer {row['empty_coordinates_per_layer']} of "
                  f"{row['coordinate_count']}", file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
