"""Independent float64 references for the Winograd tests: the convolution from the explicit
transform matrices, the transformed input tiles, 2x2 max pooling, and an elementwise check
against an absolute-value error bound. Tests-only (imported as `winograd_reference`)."""

import numpy as np

from tf_sparse_winograd import transforms


def numpy_winograd_conv2d(x, u, bias, tile_size, padding, winograd_relu, activation,
                          absolute=False):
    """F(m x m, 3 x 3) Winograd convolution in float64, from its definition.

    With absolute=True, every matrix and value is replaced by its absolute value (and the ReLUs
    dropped): the result bounds the magnitude of all the terms summed, which scales the float32
    rounding error of any evaluation order.
    """
    bt, _, at = transforms.transform_matrices(tile_size)
    x = np.asarray(x, np.float64)
    u = np.asarray(u, np.float64)
    b = None if bias is None else np.asarray(bias, np.float64)
    if absolute:
        bt, at, x, u = np.abs(bt), np.abs(at), np.abs(x), np.abs(u)
        b = None if b is None else np.abs(b)
    m = tile_size
    a = m + 2
    n, h, w, c = x.shape
    f = u.shape[3]
    pad = 1 if padding.upper() == "SAME" else 0
    out_h, out_w = h + 2 * pad - 2, w + 2 * pad - 2
    assert out_h >= 0 and out_w >= 0
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    xp = np.zeros((n, tiles_h * m + 2, tiles_w * m + 2, c))
    xp[:, pad:pad + h, pad:pad + w, :] = x
    y = np.zeros((n, tiles_h * m, tiles_w * m, f))
    u_rows = u.reshape(a * a, c, f)
    for ty in range(tiles_h):
        for tx in range(tiles_w):
            d = xp[:, ty * m:ty * m + a, tx * m:tx * m + a, :]            # (n, a, a, c)
            v = np.einsum("iy,nyxc,jx->nijc", bt, d, bt, optimize=True)
            if winograd_relu and not absolute:
                v = np.maximum(v, 0.0)
            prod = np.matmul(v.reshape(n, a * a, c).transpose(1, 0, 2), u_rows)  # (a*a, n, f)
            prod = prod.reshape(a, a, n, f)
            y[:, ty * m:(ty + 1) * m, tx * m:(tx + 1) * m, :] = np.einsum(
                "ui,ijnf,vj->nuvf", at, prod, at, optimize=True)
    y = y[:, :out_h, :out_w, :]
    if b is not None:
        y = y + b
    if activation == "relu" and not absolute:
        y = np.maximum(y, 0.0)
    return y


def numpy_max_pool_2x2(y):
    """2 x 2 max pool with stride 2, VALID (odd last rows and columns dropped), in numpy."""
    n, h, w, f = y.shape
    y = y[:, :h // 2 * 2, :w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, f)
    return y.max(axis=(2, 4))


def same_conv_reference(x, u, tile_size=2):
    """The float64 SAME convolution without bias or activations, and its absolute-value bound."""
    return (numpy_winograd_conv2d(x, u, None, tile_size, "SAME", False, None),
            numpy_winograd_conv2d(x, u, None, tile_size, "SAME", False, None, absolute=True))


def assert_close(actual, expected, bound, rtol, what=""):
    """|actual - expected| <= rtol * bound elementwise (bound: the absolute-value evaluation)."""
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert not np.isnan(actual).any(), f"{what}: NaN in the output (an element was not written)"
    error = np.abs(actual - expected)
    allowed = rtol * bound + 1e-30
    worst = np.unravel_index(np.argmax(error / allowed), error.shape) if error.size else None
    assert np.all(error <= allowed), (
        f"{what}: max error {error.max():.3g} at {worst}: got {actual[worst]!r}, expected "
        f"{expected[worst]!r}, allowed {allowed[worst]:.3g}")


def transformed_input(x, tile_size, padding="SAME", winograd_relu=False):
    """V = B^T d B of every tile of an NHWC input, in float64: (n, tiles, a, a, channels), tiles
    in row-major order."""
    bt, _, _ = transforms.transform_matrices(tile_size)
    m, a = tile_size, tile_size + 2
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    pad = 1 if padding.upper() == "SAME" else 0
    out_h, out_w = h + 2 * pad - 2, w + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    xp = np.zeros((n, tiles_h * m + 2, tiles_w * m + 2, c))
    xp[:, pad:pad + h, pad:pad + w, :] = x
    tiles = [np.einsum("iy,nyxc,jx->nijc", bt, xp[:, i * m:i * m + a, j * m:j * m + a], bt)
             for i in range(tiles_h) for j in range(tiles_w)]
    v = np.stack(tiles, 1)
    return np.maximum(v, 0.0) if winograd_relu else v
