"""experiments/dense_gap.py: its 'projected', 'preconditioned' (at several --complement_step
values) and 'diagonal_l2' Winograd layers do what the docs/results.md diagnosis says they do,
checked against tf.nn.conv2d and explicit matrices.

Run in a fresh interpreter: the script defines absl flags that train.py's tests define too.
"""

import support

_CHECKS = r"""
import sys
import keras
import numpy as np
import tensorflow as tf
sys.path.insert(0, "experiments")
import dense_gap
from tf_sparse_winograd import transforms
from tf_sparse_winograd.layers import WinogradConv2D

for tile in (2, 4):
    _, G, _ = transforms.transform_matrices(tile)
    K = np.kron(G, G)                                  # vec(G g G^T) = K vec(g)
    a2 = K.shape[0]
    in_range = K @ np.linalg.pinv(K)
    x = tf.random.stateless_normal((2, 9, 7, 3), seed=(1, tile))

    # projected: U lands in {G g G^T}, and the layer is then tf.nn.conv2d with that g.
    layer = dense_gap.winograd_layer_class("projected")(filters=4, tile_size=tile,
                                                         use_bias=False)
    layer(x)
    free = np.random.default_rng(tile).normal(size=layer.winograd_kernel.shape)
    u = layer.kernel_constraint(tf.constant(free, tf.float32)).numpy()
    g = np.linalg.lstsq(K, u.reshape(a2, -1).astype(np.float64), rcond=None)[0]
    assert np.abs(K @ g - u.reshape(a2, -1)).max() < 1e-4, "projected U is not G g G^T"
    assert np.abs(u - free).max() > 0.1, "the projection changed nothing"
    layer.winograd_kernel.assign(u)
    reference = tf.nn.conv2d(x, g.reshape(3, 3, 3, 4).astype(np.float32), 1, "SAME")
    err = np.abs(layer(x).numpy() - reference.numpy()).max()
    assert err < 1e-4 * np.abs(reference.numpy()).max(), ("projected vs conv2d", tile, err)

    # preconditioned: same forward pass; U's gradient is P times plain SGD's, and its part on
    # {G g G^T} is K times the spatial kernel's gradient when U = G g G^T.
    for relu, c in ((False, 1.0), (True, 1.0), (True, 0.0), (False, 0.005)):
        layer = dense_gap.winograd_layer_class("preconditioned", complement_step=c)(
            filters=4, tile_size=tile, winograd_relu=relu, use_bias=False)
        plain = WinogradConv2D(filters=4, tile_size=tile, winograd_relu=relu, use_bias=False,
                               kernel_gradient_scale=None)
        layer(x), plain(x)
        plain.set_weights(layer.get_weights())
        with tf.GradientTape(persistent=True) as tape:
            y, y_plain = layer(x), plain(x)
            loss, loss_plain = tf.reduce_sum(y ** 2), tf.reduce_sum(y_plain ** 2)
        assert np.array_equal(y.numpy(), y_plain.numpy())
        grad = tape.gradient(loss, layer.winograd_kernel).numpy().reshape(a2, -1)
        grad_plain = tape.gradient(loss_plain, plain.winograd_kernel).numpy().reshape(a2, -1)
        P = K @ K.T + c * (np.eye(a2) - in_range)
        err = np.abs(grad - P @ grad_plain).max() / np.abs(grad).max()
        assert err < 1e-5, ("preconditioned gradient", tile, relu, c, err)
        if c == 0:  # No step off {G g G^T}.
            assert np.abs(grad - in_range @ grad).max() < 1e-5 * np.abs(grad).max()
    g = np.random.default_rng(7).normal(size=(3, 3, 3, 4))
    layer = dense_gap.winograd_layer_class("preconditioned")(filters=4, tile_size=tile,
                                                             use_bias=False)
    layer(x)
    layer.winograd_kernel.assign(transforms.kernel_to_winograd(g, tile).astype(np.float32))
    spatial = tf.Variable(g.astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
        loss_spatial = tf.reduce_sum(tf.nn.conv2d(x, spatial, 1, "SAME") ** 2)
    grad = tape.gradient(loss, layer.winograd_kernel).numpy().reshape(a2, -1)
    grad_g = tape.gradient(loss_spatial, spatial).numpy().reshape(9, -1)
    err = np.abs(in_range @ grad - K @ grad_g).max() / np.abs(K @ grad_g).max()
    assert err < 1e-4, ("preconditioned step vs spatial SGD's", tile, err)

    # baseline keeps the plain gradient; diagonal is the layer as it is (gradient scaled).
    baseline = dense_gap.winograd_layer_class("baseline")(filters=4, tile_size=tile)
    assert baseline.kernel_gradient_scale is None
    assert baseline.get_config()["kernel_gradient_scale"] is None
    assert dense_gap.winograd_layer_class("diagonal") is WinogradConv2D

    # diagonal_l2: the gradient of the L2 on U is 2 l2 |G_i|^2 |G_j|^2 U (explicit rows of G),
    # where the layer's plain L2 gives 2 l2 U; the data gradient is the same scaled one.
    weighted = dense_gap.winograd_layer_class("diagonal_l2")(
        filters=4, tile_size=tile, use_bias=False, kernel_regularizer=keras.regularizers.L2(0.3))
    weighted(x)
    weighted.winograd_kernel.assign(free.astype(np.float32))
    with tf.GradientTape() as tape:
        penalty = tf.add_n(weighted.losses)
    grad = tape.gradient(penalty, weighted.winograd_kernel).numpy()
    scale = np.outer(np.sum(G ** 2, 1), np.sum(G ** 2, 1))[:, :, None, None]
    err = np.abs(grad - 2 * 0.3 * scale * free).max() / np.abs(grad).max()
    assert err < 1e-5, ("diagonal_l2 penalty gradient", tile, err)
    assert scale.min() < 0.9 * scale.max()  # the weighting is not uniform
print("dense_gap checks passed")
"""


def test_projected_and_preconditioned_layers_match_their_definitions():
    result = support.run_python(_CHECKS, timeout=600)
    assert "dense_gap checks passed" in result.stdout
