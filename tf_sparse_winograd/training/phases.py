"""The paper's three phases: dense training, one-shot pruning, retraining with fixed masks.

Directory layout under `model_dir` (each phase reads the previous one's output, so a run can be
restarted at any phase):

  dense/                      trained dense model
  prune_d<density>/           pruned model (masks chosen from the dense weights, not retrained)
  retrain_d<density>/         retrained model (masks fixed)

Each phase directory holds flags.txt / flags.json (the effective configuration), checkpoints/
(one per epoch, for resuming), progress.jsonl, logs/ (TensorBoard), model.weights.h5 (the phase's
final weights) and results.json (accuracy, densities, multiply counts). A phase whose
results.json exists is complete and is skipped by later runs; several densities share one dense/.
"""

import json
import math
import os

import keras
import tensorflow as tf
from absl import logging

from tf_sparse_winograd import analysis
from tf_sparse_winograd import data
from tf_sparse_winograd import export as export_lib
from tf_sparse_winograd import models
from tf_sparse_winograd import pruning
from tf_sparse_winograd.training import checkpointing
from tf_sparse_winograd.training import config as config_lib
from tf_sparse_winograd.training import strategies

WEIGHTS_FILE = "model.weights.h5"
RESULTS_FILE = "results.json"
RETRAIN_LR_FACTOR = 0.1  # Retraining starts from a smaller learning rate than dense training.
# Gradual pruning (tfmot's usual recipe): sparsity rises along PolynomialDecay from 0 to the target
# over the first GRADUAL_RAMP_FRACTION of the retraining steps, pruning every GRADUAL_FREQUENCY
# steps (fewer for short phases: at least 10 pruning events); the masks then stay fixed.
GRADUAL_RAMP_FRACTION = 0.5
GRADUAL_FREQUENCY = 100


def _load_datasets(config):
    """(train, eval, info): the evaluation split is the test split, or the held-out part of the
    training split when `config.holdout_examples` is set (for tuning without the test split)."""
    common = dict(source=config.data_source, data_dir=config.data_dir,
                  tfds_data_dir=config.tfds_data_dir, download=config.download, seed=config.seed,
                  holdout_examples=config.holdout_examples)
    eval_split = "holdout" if config.holdout_examples else "test"
    train, info = data.load_dataset(config.dataset, "train", config.batch_size, training=True,
                                    max_examples=config.max_train_examples, **common)
    test, test_info = data.load_dataset(config.dataset, eval_split, config.batch_size,
                                        training=False, max_examples=config.max_eval_examples,
                                        **common)
    info = dict(info, train_examples=info["examples"], eval_examples=test_info["examples"],
                eval_split=eval_split)
    return train, test, info


def build_model(config, info):
    return models.build_model(config.model, info["image_shape"], info["num_classes"],
                              config.conv_type, config.tile_size, config.weight_decay,
                              config.width, kernel_gradient_scale=(
                                  None if config.kernel_gradient_scale == "none"
                                  else config.kernel_gradient_scale))


def make_optimizer(config, steps, lr_factor=1.0):
    lr = config.learning_rate * lr_factor
    steps = max(1, int(steps))
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, steps)
    elif config.lr_schedule == "step":
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, steps // 2), max(2, 3 * steps // 4)], [lr, lr * 0.1, lr * 0.01])
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def _compile(model, optimizer, config):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=config.jit_compile,
                  steps_per_execution=config.steps_per_execution)


def prunable_candidates(model, config):
    """Names of the layers the pruning phase prunes, in order (the first conv is left out)."""
    names = []
    first_conv_seen = False
    for layer in pruning.walk_layers(model):
        is_conv = pruning.is_convolution(layer)
        if is_conv and not first_conv_seen:
            first_conv_seen = True
            if not config.prune_first_conv:
                continue
        inner = pruning.unwrap(layer)
        if is_conv or (config.prune_dense and isinstance(inner, keras.layers.Dense)):
            names.append(inner.name)
    return names


def density_by_layer(model, config):
    """{layer name: density} from --density: one value for every layer, or one per layer."""
    names = prunable_candidates(model, config)
    if len(config.density) == 1:
        return {name: config.density[0] for name in names}
    if len(config.density) != len(names):
        raise ValueError(f"--density has {len(config.density)} values; give one, or one per "
                         f"pruned layer ({len(names)}: {', '.join(names)})")
    return dict(zip(names, config.density))


def _prune(model, config):
    return pruning.prune_to_density(model, density_by_layer(model, config), skip_first_conv=False,
                                    block_size=(1, config.prune_filter_block),
                                    criterion=config.prune_criterion)


def gradual_schedule_steps(total_steps):
    """(end_step, frequency) of the gradual schedule over a phase of `total_steps` steps.

    end_step is a multiple of the frequency, so the last pruning event reaches the target density.
    """
    ramp = max(1, int(total_steps * GRADUAL_RAMP_FRACTION))
    frequency = min(GRADUAL_FREQUENCY, max(1, ramp // 10))
    return ramp // frequency * frequency, frequency


def _prune_gradually(model, config, total_steps):
    """Wraps the prunable layers with PolynomialDecay schedules (0 -> 1 - density)."""
    end_step, frequency = gradual_schedule_steps(total_steps)
    schedules = {name: pruning.PolynomialDecay(0.0, 1.0 - density, begin_step=0,
                                               end_step=end_step, frequency=frequency)
                 for name, density in density_by_layer(model, config).items()}
    return pruning.prune_low_magnitude(model, pruning_schedule=schedules,
                                       block_size=(1, config.prune_filter_block),
                                       criterion=config.prune_criterion)


class DensitySummaries(keras.callbacks.Callback):
    """Writes every prunable layer's weight density to TensorBoard at each epoch end."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for layer in pruning.walk_layers(self.model):
                if pruning.is_prunable(layer):
                    tf.summary.scalar(f"weight_density/{pruning.unwrap(layer).name}",
                                      analysis.weight_density(layer), step=epoch + 1)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Runner:
    """Runs phases of one configuration; holds the strategy and the datasets."""

    def __init__(self, config, flag_values=None):
        self.config = config
        self.flag_values = flag_values if flag_values is not None else config.as_dict()
        self.strategy = strategies.make_strategy(config.strategy)
        self.train_ds, self.eval_ds, self.info = _load_datasets(config)
        self.steps_per_epoch = math.ceil(self.info["train_examples"] / config.batch_size)
        self.models = {}  # phase -> the model it trained in this process (for inspection)
        logging.info("Data: %s", self.info)
        logging.info("Strategy: %s with %d replica(s)", type(self.strategy).__name__,
                     self.strategy.num_replicas_in_sync)

    # ----------------------------------------------------------------------------- helpers
    def _phase_dir(self, phase):
        return self.config.phase_dir(phase)

    def is_done(self, phase):
        return os.path.exists(os.path.join(self._phase_dir(phase), RESULTS_FILE))

    def load_results(self, phase):
        with open(os.path.join(self._phase_dir(phase), RESULTS_FILE)) as f:
            return json.load(f)

    def _require(self, phase, needed):
        path = os.path.join(self._phase_dir(needed), WEIGHTS_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Phase '{phase}' starts from the '{needed}' phase's output "
                                    f"{path}, which does not exist. Run --phase={needed} first "
                                    "(or --phase=all).")
        return path

    def _fit(self, phase, model, optimizer, extra_callbacks=()):
        config = self.config
        directory = self._phase_dir(phase)
        epochs = config.epochs_for(phase)
        ckpt = checkpointing.PhaseCheckpoint(directory, model, optimizer, self.strategy)
        initial_epoch = ckpt.restore_latest()
        if initial_epoch:
            logging.info("Phase %s: resuming from the checkpoint of epoch %d (optimizer step %d)",
                         phase, initial_epoch, int(optimizer.iterations.numpy()))
        if initial_epoch >= epochs:
            return
        logs = os.path.join(directory, "logs")
        callbacks = [checkpointing.EpochCheckpoint(ckpt, initial_epoch)]
        if tensorboard_available():
            callbacks += [keras.callbacks.TensorBoard(logs, write_graph=False, profile_batch=0),
                          DensitySummaries(os.path.join(logs, "density"))]
            if phase == "retrain":
                callbacks.append(pruning.PruningSummaries(os.path.join(logs, "pruning")))
        else:
            logging.warning("TensorBoard is not installed (pip install tensorboard): no "
                            "TensorBoard logs are written.")
        model.fit(self.train_ds, epochs=epochs, initial_epoch=initial_epoch,
                  validation_data=self.eval_ds, callbacks=callbacks + list(extra_callbacks),
                  verbose=config.verbose)

    def _new_model(self, lr_factor, epochs, pruned_from=None):
        """Builds (model, optimizer) in the strategy's scope; prunes/loads weights if asked."""
        with self.strategy.scope():
            model = build_model(self.config, self.info)
            if pruned_from == "dense":
                model.load_weights(self._require("prune", "dense"))
                model = _prune(model, self.config)
            elif pruned_from == "dense_gradually":
                model.load_weights(self._require("retrain", "dense"))
                model = _prune_gradually(model, self.config, self.steps_per_epoch * epochs)
            elif pruned_from == "prune":
                model = _prune(model, self.config)  # Same structure; masks come from the file.
                model.load_weights(self._require("retrain", "prune"))
            optimizer = make_optimizer(self.config, self.steps_per_epoch * max(epochs, 1),
                                       lr_factor)
            _compile(model, optimizer, self.config)
            optimizer.build(model.trainable_variables)
        return model, optimizer

    def _finish(self, phase, model, extra=None):
        """Evaluates, counts multiplies, saves the weights and results.json of a phase."""
        directory = self._phase_dir(phase)
        loss, accuracy = model.evaluate(self.eval_ds, verbose=0)
        batches = self.config.analysis_batches
        counts = analysis.count_multiplies(
            model, self.eval_ds.map(lambda x, y: x) if batches else None,
            tile_size=self.config.tile_size, max_batches=batches)
        results = {"phase": phase, "model": self.config.model, "dataset": self.config.dataset,
                   "conv_type": self.config.conv_type, "tile_size": self.config.tile_size,
                   "width": self.config.width, "density": list(self.config.density)
                   if phase != "dense" else [1.0],
                   "eval_loss": float(loss), "eval_accuracy": float(accuracy),
                   "train_examples": self.info["train_examples"],
                   "eval_examples": self.info["eval_examples"],
                   "eval_split": self.info["eval_split"],
                   "epochs": self.config.epochs_for(phase),
                   "multiplies": counts.as_dict()}
        results.update(extra or {})
        if strategies.is_chief(self.strategy):
            model.save_weights(os.path.join(directory, WEIGHTS_FILE), overwrite=True)
            with open(os.path.join(directory, RESULTS_FILE), "w") as f:
                json.dump(results, f, indent=2)
        strategies.barrier(self.strategy)  # the next phase reads these weights on every worker
        logging.info("Phase %s: eval accuracy %.4f (%d examples)", phase, accuracy,
                     self.info["eval_examples"])
        return results, counts

    # ------------------------------------------------------------------------------ phases
    def run_phase(self, phase):
        """Runs one phase unless it is complete; returns its results dict."""
        if self.is_done(phase):
            logging.info("Phase %s already complete in %s: skipped", phase, self._phase_dir(phase))
            return self.load_results(phase)
        config = self.config
        directory = self._phase_dir(phase)
        os.makedirs(directory, exist_ok=True)
        config_lib.write_flags(directory, self.flag_values)
        keras.utils.set_random_seed(config.seed)
        if phase == "dense":
            model, optimizer = self._new_model(1.0, config.epochs_for(phase))
            self._fit(phase, model, optimizer)
            results, counts = self._finish(phase, model)
        elif phase == "prune":
            model, _ = self._new_model(1.0, 1, pruned_from="dense")
            results, counts = self._finish(phase, model, {"sparsity": _sparsity(model)})
        elif phase == "retrain":
            model, optimizer = self._new_model(
                RETRAIN_LR_FACTOR, config.epochs_for(phase),
                pruned_from="dense_gradually" if config.pruning == "gradual" else "prune")
            self._fit(phase, model, optimizer, [pruning.UpdatePruningStep()])
            extra = {"sparsity": _sparsity(model), "pruning": config.pruning}
            if config.pruning == "gradual":
                extra["gradual_end_step"], extra["gradual_frequency"] = gradual_schedule_steps(
                    self.steps_per_epoch * config.epochs_for(phase))
            results, counts = self._finish(phase, model, extra)
            if config.export_dir and strategies.is_chief(self.strategy):
                results["export_dir"] = export(model, config.export_dir)
        else:
            raise ValueError(f"Unknown phase {phase!r}")
        self.models[phase] = model
        print(f"\n== {phase}: eval accuracy {results['eval_accuracy']:.4f} on "
              f"{results['eval_examples']} {results['eval_split']} examples ({directory})")
        print(counts.format_table())
        return results

    def run(self):
        phases = self.config.phases if self.config.phase == "all" else (self.config.phase,)
        return {phase: self.run_phase(phase) for phase in phases}


def tensorboard_available():
    """tf.summary needs the tensorboard package; TensorFlow does not always bring it."""
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False


def _sparsity(model):
    return [{k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in row.items()}
            for row in pruning.sparsity_report(model).as_dicts()]


def export(model, export_dir):
    """Exports a SavedModel on the sparse ops (export_saved_model strips the pruning wrappers)."""
    export_lib.export_saved_model(model, export_dir)
    logging.info("Exported a SavedModel to %s", export_dir)
    return export_dir


def restore_model(config, phase):
    """The model a finished phase of `config` saved (pruning wrappers and masks included).

    For benchmarks and exports after the fact: rebuilds the network the way the phase did and
    loads its model.weights.h5. Uses no data.
    """
    spec = data.get_spec(config.dataset)
    info = {"image_shape": spec.image_shape, "num_classes": spec.num_classes}
    path = os.path.join(config.phase_dir(phase), WEIGHTS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Phase '{phase}' has no saved model at {path}: run it first.")
    model = build_model(config, info)
    if phase == "retrain" and config.pruning == "gradual":
        model = _prune_gradually(model, config, total_steps=1)  # masks come from the file
    elif phase != "dense":
        model = _prune(model, config)
    model.load_weights(path)
    return model


def run(config, flag_values=None):
    """Runs `config.phase` ('all' = dense, prune, retrain); returns {phase: results}."""
    return Runner(config, flag_values).run()
