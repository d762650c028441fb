"""WinogradConv2D and the dense Winograd math against independent references.

References: tf.nn.conv2d with the spatial kernel g when U = G g G^T, and a float64 numpy
Winograd written here tile by tile from the explicit transform matrices.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import support
from tf_sparse_winograd import transforms
from tf_sparse_winograd import winograd_math
from tf_sparse_winograd.layers import WinogradConv2D
from winograd_reference import numpy_winograd_conv2d

# Worst relative error (max |y - ref| / max |ref|) allowed in float32, per tile size. Tile 6's bound
# is measured: the worst over GRID was 8.5e-6 (tile 4: 2.9e-6, tile 2: 3.5e-7), see
# docs/performance.md; F(6x6, 3x3) has the largest transform coefficients.
FLOAT32_RTOL = {2: 1e-5, 4: 1e-4, 6: 5e-5}
SIZES = (1, 2, 3, 5, 7, 8, 13, 32)
CHANNELS = (1, 3, 17, 64)


def relative_error(actual, expected):
    scale = max(np.abs(expected).max(), 1e-30)
    return np.abs(np.asarray(actual, np.float64) - expected).max() / scale


def numpy_winograd(x, u, tile_size, padding, winograd_relu=False):
    return numpy_winograd_conv2d(x, u, None, tile_size, padding, winograd_relu, None)


def _grid(tile_size):
    """Every size in SIZES as H and as W, both paddings, cycling channels and batch sizes."""
    cases = []
    for k, (h, padding) in enumerate(itertools.product(SIZES, ("same", "valid"))):
        w = SIZES[(3 * k + tile_size) % len(SIZES)]
        if padding == "valid" and (h < 3 or w < 3):
            continue
        cin = CHANNELS[k % len(CHANNELS)]
        cout = CHANNELS[(k + 1 + tile_size) % len(CHANNELS)]
        cases.append((tile_size, 1 + 2 * (k % 2), h, w, cin, cout, padding))
    return cases


GRID = [case for t in transforms.SUPPORTED_TILE_SIZES for case in _grid(t)]


@pytest.mark.parametrize("tile_size,batch,height,width,cin,cout,padding",
                         support.fast_sample(GRID, 6))
def test_layer_equals_tf_conv2d(tile_size, batch, height, width, cin, cout, padding):
    rng = np.random.default_rng(hash((tile_size, batch, height, width, cin, cout, padding)) % 2**32)
    x = rng.standard_normal((batch, height, width, cin)).astype(np.float32)
    g = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
    layer = WinogradConv2D(cout, tile_size=tile_size, padding=padding, use_bias=False)
    layer.build(x.shape)
    layer.winograd_kernel.assign(transforms.kernel_to_winograd(g, tile_size).astype(np.float32))
    expected = tf.nn.conv2d(x.astype(np.float64), g.astype(np.float64), 1, padding.upper()).numpy()
    actual = layer(x).numpy()
    assert actual.shape == expected.shape == layer.compute_output_shape(x.shape)
    assert relative_error(actual, expected) < FLOAT32_RTOL[tile_size]


@pytest.mark.parametrize("winograd_relu,tile_size", support.fast_sample(
    [(True, 2), (False, 6), (False, 4), (True, 6), (False, 2), (True, 4)], 2))
def test_float64_matches_numpy_winograd(tile_size, winograd_relu):
    rng = np.random.default_rng(tile_size)
    for height, width, padding in [(7, 13, "same"), (5, 3, "valid"), (2, 1, "same")]:
        x = rng.standard_normal((2, height, width, 3))
        u = rng.standard_normal((tile_size + 2, tile_size + 2, 3, 4))
        actual = winograd_math.winograd_conv2d(x, u, tile_size, padding, winograd_relu).numpy()
        expected = numpy_winograd(x, u, tile_size, padding, winograd_relu)
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile_size", transforms.SUPPORTED_TILE_SIZES)
def test_each_transform_against_explicit_matrix(tile_size):
    BT, _, AT = transforms.transform_matrices(tile_size)
    m, a = tile_size, tile_size + 2
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2 * m + 1, m + 2, 3))
    grid = winograd_math.TileGrid(tf.constant(x), tile_size, "same")
    v = winograd_math.input_transform(tf.constant(x), grid).numpy()
    padded = np.pad(x, ((0, 0), (1, 3 * m + 2 - x.shape[1] - 1), (1, 2 * m + 2 - x.shape[2] - 1), (0, 0)))
    assert v.shape == (a * a, 2 * 3 * 2, 3)
    for n, ty, tx in itertools.product(range(2), range(3), range(2)):
        d = padded[n, ty * m:ty * m + a, tx * m:tx * m + a]
        expected = np.einsum("iu,uvc,jv->ijc", BT, d, BT).reshape(a * a, 3)
        np.testing.assert_allclose(v[:, (n * 3 + ty) * 2 + tx], expected, rtol=1e-12, atol=1e-12)
    m_tiles = rng.standard_normal((a * a, 2 * 3 * 2, 5))
    y = winograd_math.output_transform(tf.constant(m_tiles), grid).numpy()
    for n, ty, tx in itertools.product(range(2), range(3), range(2)):
        tile = m_tiles[:, (n * 3 + ty) * 2 + tx].reshape(a, a, 5)
        expected = np.einsum("ui,ijf,vj->uvf", AT, tile, AT)
        rows, cols = slice(ty * m, min((ty + 1) * m, y.shape[1])), slice(tx * m, min((tx + 1) * m, y.shape[2]))
        np.testing.assert_allclose(y[n, rows, cols], expected[:rows.stop - rows.start, :cols.stop - cols.start],
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tile_size,padding,winograd_relu", support.fast_sample(
    [(2, "same", False), (6, "same", False), (4, "valid", True), (2, "valid", True)], 4))
def test_gradients_match_finite_differences(tile_size, padding, winograd_relu):
    rng = np.random.default_rng(11)
    x = tf.constant(rng.standard_normal((2, 5, 6, 2)))
    u = tf.constant(rng.standard_normal((tile_size + 2, tile_size + 2, 2, 3)))
    # A tf.function, as in training: the ~1,000 evaluations the differences take run as graph
    # calls (half the time of eager ones); test_layer_gradients_through_keras_float64 is eager.
    f = tf.function(lambda x, u: winograd_math.winograd_conv2d(x, u, tile_size, padding,
                                                               winograd_relu),
                    autograph=False)
    theoretical, numerical = tf.test.compute_gradient(f, [x, u], delta=1e-6)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_layer_gradients_through_keras_float64():
    """Gradients of a float64 layer (input and winograd_kernel) against central differences
    (with the plain kernel gradient: 'transform' scales it on purpose, tested below)."""
    rng = np.random.default_rng(3)
    layer = WinogradConv2D(3, tile_size=4, dtype="float64", activation="tanh", winograd_relu=True,
                           kernel_gradient_scale=None)
    x = tf.constant(rng.standard_normal((1, 7, 5, 2)))
    weights = tf.constant(rng.standard_normal((7, 5, 3)))
    layer.build(x.shape)

    def loss(x):
        return tf.reduce_sum(layer(x) * weights)

    theoretical, numerical = tf.test.compute_gradient(loss, [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-7)
    with tf.GradientTape() as tape:
        value = loss(x)
    kernel_grad = tape.gradient(value, layer.winograd_kernel).numpy()
    u0 = layer.winograd_kernel.numpy()
    for index in [(0, 0, 0, 0), (2, 3, 1, 2), (5, 5, 1, 1), (4, 1, 0, 2)]:
        bumped = []
        for sign in (1, -1):
            u = u0.copy()
            u[index] += sign * 1e-6
            layer.winograd_kernel.assign(u)
            bumped.append(loss(x).numpy())
        layer.winograd_kernel.assign(u0)
        assert abs((bumped[0] - bumped[1]) / 2e-6 - kernel_grad[index]) < 1e-6 * max(1, abs(kernel_grad[index]))


@pytest.mark.parametrize("tile_size", transforms.SUPPORTED_TILE_SIZES)
def test_kernel_gradient_scale_is_the_diagonal_of_the_kernel_transform(tile_size):
    """|G_i|^2 |G_j|^2 against diag(K K^T) with K = G (x) G built by np.kron."""
    _, G, _ = transforms.transform_matrices(tile_size)
    K = np.kron(G, G)
    a = tile_size + 2
    np.testing.assert_allclose(transforms.kernel_gradient_scale(tile_size).ravel(),
                               np.diag(K @ K.T), rtol=1e-14)
    assert transforms.kernel_gradient_scale(tile_size).shape == (a, a)


@pytest.mark.parametrize("tile_size,winograd_relu", [(2, False), (4, True), (6, False)])
def test_scaled_kernel_gradient_leaves_the_forward_pass_and_scales_each_coordinate(
        tile_size, winograd_relu):
    """'transform' gives the same outputs bit for bit, and U's gradient times the scale."""
    rng = np.random.default_rng(tile_size)
    x = tf.constant(rng.standard_normal((2, 9, 7, 3)), tf.float32)
    weights = tf.constant(rng.standard_normal((2, 9, 7, 4)), tf.float32)
    layers = {scale: WinogradConv2D(4, tile_size=tile_size, winograd_relu=winograd_relu,
                                    kernel_gradient_scale=scale)
              for scale in ("transform", None)}
    for layer in layers.values():
        layer.build(x.shape)
    layers[None].set_weights(layers["transform"].get_weights())
    outputs, grads = {}, {}
    for scale, layer in layers.items():
        with tf.GradientTape() as tape:
            outputs[scale] = layer(x)
            loss = tf.reduce_sum(outputs[scale] * weights)
        grads[scale] = tape.gradient(loss, layer.trainable_variables)
    np.testing.assert_array_equal(outputs["transform"].numpy(), outputs[None].numpy())
    scale = transforms.kernel_gradient_scale(tile_size)[:, :, None, None]
    np.testing.assert_allclose(grads["transform"][0].numpy(), grads[None][0].numpy() * scale,
                               rtol=1e-6, atol=1e-9 * np.abs(grads[None][0].numpy()).max())
    assert np.abs(grads["transform"][0].numpy() - grads[None][0].numpy()).max() > 0
    np.testing.assert_array_equal(grads["transform"][1].numpy(), grads[None][1].numpy())  # bias


def test_sgd_at_f4_with_the_scaled_gradient_steps_at_the_spatial_scale():
    """One SGD step on U from U = G g G^T against one on g, measured by how far each moves the
    layer's output. At F(4x4) the plain gradient's step moves it ~100 times as far as the spatial
    step through its part on {G g G^T} alone (and much further through the other directions);
    the scaled gradient's step on {G g G^T} is within a few times of the spatial one, and the
    whole step is hundreds of times shorter than the plain one."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal((4, 12, 12, 8)), tf.float32)
    target = tf.constant(rng.standard_normal((4, 12, 12, 8)), tf.float32)
    g = keras.initializers.HeNormal(seed=2)((3, 3, 8, 8)).numpy()
    _, G, _ = transforms.transform_matrices(4)
    K = np.kron(G, G)
    onto_kernels = K @ np.linalg.pinv(K)  # orthogonal projection onto {G g G^T}

    def step(kernel, forward):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((forward(kernel) - target) ** 2)
        return -0.05 * tape.gradient(loss, kernel).numpy()

    def conv(kernel):
        return tf.nn.conv2d(x, kernel, 1, "SAME")

    spatial_move = float(tf.norm(conv(step(tf.Variable(g), conv))))
    moves = {}
    for scale in ("transform", None):
        layer = WinogradConv2D(8, tile_size=4, use_bias=False, kernel_gradient_scale=scale)
        layer.build(x.shape)
        layer.winograd_kernel.assign(transforms.kernel_to_winograd(g, 4).astype(np.float32))
        du = step(layer.winograd_kernel, lambda _: layer(x))
        on_kernels = (onto_kernels @ du.reshape(36, -1)).reshape(du.shape)
        moves[scale] = [float(tf.norm(winograd_math.winograd_conv2d(
            x, tf.constant(d, tf.float32), 4))) / spatial_move for d in (du, on_kernels)]
    assert moves[None][1] > 20, moves
    assert 0.2 < moves["transform"][1] < 5, moves
    assert moves[None][0] > 100 * moves["transform"][0], moves


def test_initialization_matches_conv2d_with_same_initializer():
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 16)).astype(np.float32)
    conv = keras.layers.Conv2D(32, 3, padding="same", kernel_initializer=keras.initializers.HeNormal(seed=5))
    wino = WinogradConv2D(32, tile_size=4, kernel_initializer=keras.initializers.HeNormal(seed=5))
    assert relative_error(wino(x).numpy(), conv(x).numpy().astype(np.float64)) < 1e-4
    assert wino.winograd_kernel.shape == (6, 6, 16, 32)
    assert [w.path.split("/")[-1] for w in wino.weights] == ["winograd_kernel", "bias"]


@pytest.mark.parametrize("tile_size", transforms.SUPPORTED_TILE_SIZES)
def test_from_conv2d_reproduces_conv2d(tile_size):
    rng = np.random.default_rng(tile_size)
    conv = keras.layers.Conv2D(6, 3, padding="valid", activation="relu", bias_initializer="random_normal")
    x = rng.standard_normal((3, 11, 8, 4)).astype(np.float32)
    expected = conv(x).numpy()
    wino = WinogradConv2D.from_conv2d(conv, tile_size)
    assert (wino.name, wino.padding, wino.filters) == (conv.name, "valid", 6)
    assert relative_error(wino(x).numpy(), expected) < FLOAT32_RTOL[tile_size]


@pytest.mark.parametrize("conv,match", [
    (keras.layers.Conv2D(4, 3, strides=2), "strides"),
    (keras.layers.Conv2D(4, 5), "kernel_size"),
    (keras.layers.Conv2D(4, 3, dilation_rate=2), "dilation_rate"),
])
def test_from_conv2d_rejects_unsupported(conv, match):
    conv.build((None, 8, 8, 2))
    with pytest.raises(ValueError, match=match):
        WinogradConv2D.from_conv2d(conv)
    with pytest.raises(ValueError, match="conv2d_layer"):
        WinogradConv2D.from_conv2d(keras.layers.Dense(3))


@pytest.mark.parametrize("kwargs,match", [
    (dict(filters=0), "filters=0"), (dict(filters=2.5), "filters=2.5"),
    (dict(filters=4, kernel_size=5), "kernel_size=5"), (dict(filters=4, kernel_size=(3, 1)), r"kernel_size=\(3, 1\)"),
    (dict(filters=4, strides=2), "strides=2"), (dict(filters=4, dilation_rate=(2, 2)), "dilation_rate"),
    (dict(filters=4, tile_size=3), "tile_size=3"), (dict(filters=4, padding="causal"), "padding='causal'"),
    (dict(filters=4, winograd_relu="yes"), "winograd_relu='yes'"),
    (dict(filters=4, kernel_gradient_scale="spatial"), "kernel_gradient_scale='spatial'"),
])
def test_bad_arguments_raise_named_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WinogradConv2D(**kwargs)


def test_too_small_valid_input_and_unknown_channels():
    with pytest.raises(ValueError, match="too small"):
        WinogradConv2D(4, padding="valid").build((None, 2, 8, 3))
    with pytest.raises(ValueError, match="channel"):
        WinogradConv2D(4).build((None, 8, 8, None))


def test_get_config_round_trips_every_argument():
    layer = WinogradConv2D(
        filters=7, tile_size=4, padding="valid", use_bias=False, activation="relu",
        winograd_relu=True, kernel_gradient_scale=None,
        kernel_initializer=keras.initializers.HeNormal(seed=3),
        bias_initializer="ones", kernel_regularizer=keras.regularizers.L2(1e-4),
        bias_regularizer=keras.regularizers.L1(1e-3), activity_regularizer=keras.regularizers.L2(1e-5),
        kernel_constraint=keras.constraints.MaxNorm(3.0), bias_constraint=keras.constraints.NonNeg(),
        name="wino", dtype="float64")
    config = layer.get_config()
    clone = WinogradConv2D.from_config(config)
    assert clone.get_config() == config
    for key in ("filters", "tile_size", "padding", "use_bias", "winograd_relu",
                "kernel_gradient_scale", "name"):
        assert getattr(clone, key) == getattr(layer, key)
    assert clone.activation is keras.activations.relu
    assert isinstance(clone.kernel_initializer, keras.initializers.HeNormal)
    assert clone.kernel_initializer.seed == 3
    assert isinstance(clone.bias_initializer, keras.initializers.Ones)
    assert float(clone.kernel_regularizer.l2) == pytest.approx(1e-4)
    assert float(clone.bias_regularizer.l1) == pytest.approx(1e-3)
    assert float(clone.activity_regularizer.l2) == pytest.approx(1e-5)
    assert clone.kernel_constraint.max_value == 3.0
    assert isinstance(clone.bias_constraint, keras.constraints.NonNeg)
    assert clone.dtype_policy.name == "float64"


@pytest.mark.slow  # Traces fit and predict of F(2), F(4) and F(6) layers.
def test_keras_save_load_reproduces_outputs_exactly(tmp_path):
    rng = np.random.default_rng(0)
    inputs = keras.Input((12, 12, 3))
    h = WinogradConv2D(8, tile_size=2)(inputs)
    h = keras.layers.ReLU()(h)
    h = WinogradConv2D(8, tile_size=4, winograd_relu=True, kernel_regularizer="l2")(h)
    h = WinogradConv2D(5, tile_size=6, padding="valid", activation="relu")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    x, y = rng.standard_normal((8, 12, 12, 3)), rng.standard_normal((8, 5))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_trains_under_model_fit_with_dynamic_spatial_size():
    model = keras.Sequential([keras.Input((None, None, 2)), WinogradConv2D(4, tile_size=2),
                              keras.layers.GlobalMaxPooling2D()])
    model.compile("adam", "mse")
    rng = np.random.default_rng(1)
    before = model.layers[0].winograd_kernel.numpy().copy()
    model.fit(rng.standard_normal((4, 9, 7, 2)), rng.standard_normal((4, 4)), verbose=0)
    assert not np.array_equal(before, model.layers[0].winograd_kernel.numpy())
    assert model.predict(rng.standard_normal((1, 5, 11, 2)), verbose=0).shape == (1, 4)


def test_import_keeps_tf_keras_on_keras3():
    code = ("import os, tensorflow as tf, keras, tf_sparse_winograd, tf_sparse_winograd.layers\n"
            "import tf_sparse_winograd.pruning\n"
            "assert 'TF_USE_LEGACY_KERAS' not in os.environ, os.environ.get('TF_USE_LEGACY_KERAS')\n"
            "assert tf.keras.layers.Layer is keras.layers.Layer, tf.keras\n"
            "assert keras.__version__.startswith('3'), keras.__version__\n"
            "import sys; assert 'tensorflow_model_optimization' not in sys.modules\n"
            "print('ok')\n")
    result = support.run_python(code, env={"TF_USE_LEGACY_KERAS": None}, timeout=300)
    assert result.stdout.strip() == "ok", result.stdout
