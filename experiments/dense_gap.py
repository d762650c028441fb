"""Why does dense winograd_relu end below dense spatial? Held-out experiments (issue 16).

Trains the dense phase of one configuration with `tf_sparse_winograd.training`, evaluating on
--holdout_examples training images set aside (never on the test split), under one of these
variants of the Winograd layers:

  baseline        the models as they were: U's plain gradient;
  winograd_bias   winograd_relu layers get a learnable bias per Winograd coordinate and input
                  channel before their ReLU: relu(B^T d B + b). A batch norm offset before the
                  transform moves only the coordinate whose row of B^T sums to non-zero (1 of 16
                  at F(2x2)), so the other coordinates' ReLU thresholds are fixed at 0; this
                  variant tests whether that missing capacity explains the gap. (Diagnostic
                  only: the bias is not in the paper, the multiply count or the export.)
  iid_init        U initialized i.i.d. (variance scaling over U's own fan-in, with the average
                  variance of the default G g G^T initialization), as the paper's code did,
                  instead of the Winograd transform of a spatial He-normal kernel.
  projected       U is projected onto the range of G (x) G after every optimizer step, so each
                  layer stays an ordinary 3x3 convolution (translation-equivariant, 9 degrees of
                  freedom per channel pair) while its gradient steps and L2 are still taken on U.
                  Against spatial it isolates the Winograd-domain geometry; against baseline,
                  the 7 (F(2x2)) extra degrees of freedom a free U has.
  preconditioned  U stays free, but its gradient is multiplied by P = K K^T + c (I - K K^+),
                  with K = G (x) G and c = --complement_step: on the transforms of 3x3 kernels
                  a gradient step moves U as a step on the spatial kernel g would (U = K g), on
                  the other directions as plain SGD on U does, times c. c = 0 keeps a U that
                  starts on {G g G^T} there: the layer trains as a 3x3 kernel would (with the
                  Winograd-domain ReLU for winograd_relu). (The L2 on U is left as it is.)
  diagonal        U's gradient multiplied, per Winograd coordinate (i, j), by the diagonal of
                  K K^T, |G_i|^2 |G_j|^2: WinogradConv2D as it is (kernel_gradient_scale=
                  'transform', its default). Plain SGD on U takes steps up to 1/(|G_i|^2 |G_j|^2)
                  times a spatial step's: 1-1.8x at F(2x2), 1-750x at F(4x4). (The L2 on U is
                  left as it is.)
  diagonal_l2     'diagonal', and the L2 on U weighted by the same |G_i|^2 |G_j|^2, so that its
                  gradient is scaled as the loss's is (preconditioned SGD on the loss as written).
                  Under 'diagonal' the L2's gradient is not scaled: on the coordinates whose data
                  gradient is scaled down (to 1/750 at F(4x4)) the L2 pulls up to 750 times as
                  hard relative to the data, which may hold those coordinates near zero.

Every variant but 'diagonal' keeps U's plain gradient (kernel_gradient_scale=None), as the layer
had when the first of these runs were made.

Other hypotheses (learning rate, L2 on U) are train.py flags: --learning_rate, --weight_decay.

  python experiments/dense_gap.py --variant=winograd_bias --conv_type=winograd_relu \\
      --model_dir=/work/study-runs/search/gap_bias --epochs=30
"""

import sys

from absl import app
from absl import flags

VARIANTS = ("baseline", "winograd_bias", "iid_init", "projected", "preconditioned", "diagonal",
            "diagonal_l2")

_VARIANT = flags.DEFINE_enum("variant", "baseline", VARIANTS, "Which Winograd layer variant.")
_CONV_TYPE = flags.DEFINE_enum("conv_type", "winograd_relu",
                               ["spatial", "winograd", "winograd_relu"], "Architecture.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 2, "Winograd tile size.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (resumes if it exists).")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Dense epochs.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.05, "Learning rate (cosine decay).")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 5e-4, "L2 on kernels.")
_HOLDOUT = flags.DEFINE_integer("holdout_examples", 5000, "Held-out training examples.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_COMPLEMENT_STEP = flags.DEFINE_float(
    "complement_step", 1.0, "'preconditioned' only: c, the step on U's directions outside "
    "{G g G^T} relative to plain SGD's.")
flags.mark_flag_as_required("model_dir")


def winograd_layer_class(variant, complement_step=1.0):
    """The WinogradConv2D (sub)class the variant builds models with (`complement_step`: c of
    'preconditioned')."""
    import keras
    import numpy as np
    import tensorflow as tf
    from tf_sparse_winograd import transforms
    from tf_sparse_winograd import winograd_math
    from tf_sparse_winograd.layers import WinogradConv2D

    if variant == "diagonal":
        return WinogradConv2D

    class ScaledL2(keras.regularizers.Regularizer):
        """l2 * sum(scale * w^2): an L2 whose gradient is scaled per Winograd coordinate."""

        def __init__(self, l2, scale):
            self.l2 = l2
            self.scale = tf.constant(scale[:, :, None, None], tf.float32)

        def __call__(self, w):
            return self.l2 * tf.reduce_sum(self.scale * tf.square(w))

    class DiagonalL2WinogradConv2D(WinogradConv2D):
        """WinogradConv2D (scaled gradient) with its L2 weighted by the same scale."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.kernel_regularizer is not None:
                self.kernel_regularizer = ScaledL2(
                    float(self.kernel_regularizer.l2),
                    transforms.kernel_gradient_scale(self.tile_size))

    if variant == "diagonal_l2":
        return DiagonalL2WinogradConv2D

    class PlainGradientWinogradConv2D(WinogradConv2D):
        """WinogradConv2D with the plain gradient on U (kernel_gradient_scale=None): the layer as
        the baseline runs below were made, before 'transform' became its default."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **dict(kwargs, kernel_gradient_scale=None))

    if variant == "baseline":
        return PlainGradientWinogradConv2D

    class WinogradBiasConv2D(PlainGradientWinogradConv2D):
        """relu(V + b) with b (a^2, 1, in_channels) learnable, for winograd_relu layers."""

        def build(self, input_shape):
            super().build(input_shape)
            if self.winograd_relu:
                a = self.input_tile_size
                self.winograd_bias = self.add_weight(name="winograd_bias",
                                                     shape=(a * a, 1, input_shape[-1]),
                                                     initializer="zeros")

        def call(self, inputs):
            if not self.winograd_relu:
                return super().call(inputs)
            grid = winograd_math.TileGrid(inputs, self.tile_size, self.padding)
            v = tf.nn.relu(winograd_math.input_transform(inputs, grid) + self.winograd_bias)
            return self.add_bias_and_activation(winograd_math.output_transform(
                winograd_math.elementwise_product(v, self.winograd_kernel), grid))

    class IidInitWinogradConv2D(PlainGradientWinogradConv2D):
        """U drawn i.i.d. with the mean variance of G g G^T for a He-normal g."""

        def build(self, input_shape):
            super().build(input_shape)
            _, G, _ = transforms.transform_matrices(self.tile_size)
            mean_gain = float(np.mean(np.sum(G ** 2, axis=1))) ** 2
            variance = mean_gain * 2.0 / (9 * input_shape[-1])
            shape = tuple(self.winograd_kernel.shape)
            self.winograd_kernel.assign(keras.random.normal(shape, stddev=variance ** 0.5,
                                                            seed=None))

    def kron_g(tile_size):
        """K = G (x) G, so that vec(G g G^T) = K vec(g) (row-major)."""
        _, G, _ = transforms.transform_matrices(tile_size)
        return np.kron(G, G)

    def range_projection(k):
        """K K^+: the orthogonal projection onto {G g G^T}."""
        return k @ np.linalg.pinv(k)

    def per_coordinate(matrix, w):
        """matrix (a^2 x a^2) applied to U-shaped w (a, a, in, out) across its coordinates."""
        a = w.shape[0]
        return tf.reshape(tf.matmul(matrix, tf.reshape(w, (a * a, -1))), tf.shape(w))

    class SpatialRangeProjection(keras.constraints.Constraint):
        """Orthogonal projection of U (a, a, in, out) onto {G g G^T}."""

        def __init__(self, tile_size):
            self.projection = tf.constant(range_projection(kron_g(tile_size)), tf.float32)

        def __call__(self, w):
            return per_coordinate(self.projection, w)

    class ProjectedWinogradConv2D(PlainGradientWinogradConv2D):
        """U constrained to the Winograd transforms of 3x3 kernels."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.kernel_constraint = SpatialRangeProjection(self.tile_size)

    class PreconditionedWinogradConv2D(PlainGradientWinogradConv2D):
        """The forward pass of WinogradConv2D; U's gradient multiplied by P (see the docstring)."""

        def build(self, input_shape):
            super().build(input_shape)
            k = kron_g(self.tile_size)
            complement = np.eye(len(k)) - range_projection(k)
            self.preconditioner = tf.constant(
                k @ k.T + complement_step * complement, tf.float32)

        def call(self, inputs):
            preconditioner = self.preconditioner

            @tf.custom_gradient
            def preconditioned(u):
                return tf.identity(u), lambda upstream: per_coordinate(preconditioner, upstream)

            return self.add_bias_and_activation(winograd_math.winograd_conv2d(
                inputs, preconditioned(tf.cast(self.winograd_kernel, self.compute_dtype)),
                self.tile_size, self.padding, self.winograd_relu))

    return {"winograd_bias": WinogradBiasConv2D, "iid_init": IidInitWinogradConv2D,
            "projected": ProjectedWinogradConv2D,
            "preconditioned": PreconditionedWinogradConv2D}[variant]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from tf_sparse_winograd import training
    from tf_sparse_winograd.models import conv_block
    # The model builders create their Winograd layers through conv_block.WinogradConv2D.
    conv_block.WinogradConv2D = winograd_layer_class(_VARIANT.value, _COMPLEMENT_STEP.value)
    config = training.TrainConfig(
        conv_type=_CONV_TYPE.value, tile_size=_TILE_SIZE.value, model_dir=_MODEL_DIR.value,
        epochs=(_EPOCHS.value, 0), learning_rate=_LEARNING_RATE.value,
        weight_decay=_WEIGHT_DECAY.value, holdout_examples=_HOLDOUT.value, seed=_SEED.value,
        max_train_examples=None, max_eval_examples=None, analysis_batches=0, phase="dense",
        data_source="idx", steps_per_execution=8, verbose=2)
    values = dict(config.as_dict(), variant=_VARIANT.value,
                  complement_step=_COMPLEMENT_STEP.value, argv=" ".join(sys.argv))
    results = training.run(config, flag_values=values)
    print(f"variant {_VARIANT.value}: held-out accuracy {results['dense']['eval_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
