"""The exact Cook-Toom transform matrices, checked against published matrices and the identity."""

from fractions import Fraction as F

import numpy as np
import pytest

from tf_sparse_winograd import transforms

# Lavin & Gray (2015), "Fast Algorithms for Convolutional Neural Networks", typed from the paper.
LAVIN_F2 = {
    "BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    "G": [[1, 0, 0], [F(1, 2), F(1, 2), F(1, 2)], [F(1, 2), F(-1, 2), F(1, 2)], [0, 0, 1]],
    "AT": [[1, 1, 1, 0], [0, 1, -1, -1]],
}
LAVIN_F4 = {
    "BT": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
           [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    "G": [[F(1, 4), 0, 0], [F(-1, 6), F(-1, 6), F(-1, 6)], [F(-1, 6), F(1, 6), F(-1, 6)],
          [F(1, 24), F(1, 12), F(1, 6)], [F(1, 24), F(-1, 12), F(1, 6)], [0, 0, 1]],
    "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
}


@pytest.mark.parametrize("tile_size,published", [(2, LAVIN_F2), (4, LAVIN_F4)])
def test_matches_published_matrices_exactly(tile_size, published):
    t = transforms.winograd_transforms(tile_size)
    for name in ("BT", "G", "AT"):
        expected = tuple(tuple(F(v) for v in row) for row in published[name])
        assert getattr(t, name) == expected, name


@pytest.mark.parametrize("tile_size", transforms.SUPPORTED_TILE_SIZES)
def test_exact_correlation_identity(tile_size):
    """A^T diag(G g) B^T d == sum_k g_k d_{i+k} for every basis kernel, in exact arithmetic."""
    t = transforms.winograd_transforms(tile_size)
    a, m = t.input_tile_size, t.tile_size
    assert (len(t.BT), len(t.BT[0]), len(t.G), len(t.G[0]), len(t.AT), len(t.AT[0])) == (
        a, a, a, 3, m, a)
    for k in range(3):
        gk = [t.G[p][k] for p in range(a)]  # G e_k
        for i in range(m):
            for l in range(a):
                value = sum(t.AT[i][p] * gk[p] * t.BT[p][l] for p in range(a))
                assert value == (1 if l == i + k else 0), (k, i, l)


@pytest.mark.parametrize("tile_size", transforms.SUPPORTED_TILE_SIZES)
def test_float_matrices_and_kernel_transform(tile_size):
    BT, G, AT = transforms.transform_matrices(tile_size)
    exact = transforms.winograd_transforms(tile_size)
    np.testing.assert_array_equal(BT, np.array(exact.BT, dtype=float))
    rng = np.random.default_rng(tile_size)
    g = rng.standard_normal((3, 3, 2, 5))
    expected = np.zeros((tile_size + 2, tile_size + 2, 2, 5))
    for c in range(2):
        for f in range(5):
            expected[:, :, c, f] = G @ g[:, :, c, f] @ G.T
    np.testing.assert_allclose(transforms.kernel_to_winograd(g, tile_size), expected, rtol=1e-12, atol=1e-14)
    assert transforms.input_tile_size(tile_size) == tile_size + 2


@pytest.mark.parametrize("bad", [0, 1, 3, 8, 2.0, "2", None, True])
def test_bad_tile_size_names_argument(bad):
    with pytest.raises(ValueError, match=r"tile_size"):
        transforms.check_tile_size(bad)


def test_kernel_to_winograd_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"spatial_kernel.shape=\(5, 5, 1, 1\)"):
        transforms.kernel_to_winograd(np.zeros((5, 5, 1, 1)), 2)
