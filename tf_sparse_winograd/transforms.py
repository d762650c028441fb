"""Winograd minimal-filtering transform matrices F(m x m, 3 x 3), derived exactly.

The matrices are built from their interpolation points by the Cook-Toom construction with
Python's `fractions.Fraction`, never typed in, so every entry is exact until it is converted to a
float. For F(m, r) with n = m + r - 1 points (n - 1 finite points and the point at infinity):

  * V_k is the n x k evaluation matrix: row j holds p_j^0 .. p_j^(k-1) for a finite point and
    [0, ..., 0, 1] (the leading coefficient) for infinity.
  * Polynomial multiplication c = g * h is c = V_n^-1 [(V_r g) . (V_m h)]. The correlation that
    a convolution layer computes is its transpose with respect to h:
    y = V_m^T [(V_r g) . (V_n^-T d)], hence A^T = V_m^T, G = V_r and B^T = V_n^-T.
  * The point at infinity's row of B^T and column of A^T may be negated together; we follow the
    published F(2x2, 3x3), where they are.
  * A diagonal scaling D may move between G and B^T (G' = D G, B^T' = D^-1 B^T). As in Lavin &
    Gray we put the fractions in G: D_j = 1 / prod_{l != j} (p_j - p_l), with the sign of the first
    row chosen positive. For F(2x2, 3x3) this gives exactly the matrices of Lavin & Gray (2015).

2-D transforms are nested 1-D ones: V = B^T d B, U = G g G^T, Y = A^T [U . V] A.
"""

import dataclasses
import fractions
import functools

import numpy as np

KERNEL_SIZE = 3

# Interpolation points for each supported output tile size m (Lavin & Gray 2015).
_F = fractions.Fraction
INTERPOLATION_POINTS = {
    2: (_F(0), _F(1), _F(-1)),
    4: (_F(0), _F(1), _F(-1), _F(2), _F(-2)),
    6: (_F(0), _F(1), _F(-1), _F(2), _F(-2), _F(1, 2), _F(-1, 2)),
}
SUPPORTED_TILE_SIZES = tuple(sorted(INTERPOLATION_POINTS))

# The point at infinity may carry a sign (its row of B^T and column of A^T negated together, which
# leaves every product unchanged); Lavin & Gray's published F(2x2, 3x3) uses -1.
_INFINITY_SIGN = {2: -1, 4: 1, 6: 1}


def check_tile_size(tile_size, argument_name="tile_size"):
    """Returns `tile_size` as an int, or raises a ValueError naming the argument."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)):
        raise ValueError(
            f"`{argument_name}` must be one of {SUPPORTED_TILE_SIZES}. "
            f"Received: {argument_name}={tile_size!r}")
    if int(tile_size) not in INTERPOLATION_POINTS:
        raise ValueError(
            f"`{argument_name}` must be one of {SUPPORTED_TILE_SIZES}. "
            f"Received: {argument_name}={tile_size!r}")
    return int(tile_size)


def _evaluation_matrix(points, num_coefficients):
    """Rows evaluate a polynomial with `num_coefficients` at each point, then at infinity."""
    rows = [[p ** k for k in range(num_coefficients)] for p in points]
    rows.append([_F(0)] * (num_coefficients - 1) + [_F(1)])
    return rows


def _transpose(matrix):
    return [list(column) for column in zip(*matrix)]


def _inverse(matrix):
    """Exact Gauss-Jordan inverse of a square matrix of Fractions."""
    n = len(matrix)
    augmented = [list(row) + [_F(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for column in range(n):
        pivot = next(r for r in range(column, n) if augmented[r][column] != 0)
        augmented[column], augmented[pivot] = augmented[pivot], augmented[column]
        scale = augmented[column][column]
        augmented[column] = [value / scale for value in augmented[column]]
        for r in range(n):
            if r != column and augmented[r][column] != 0:
                factor = augmented[r][column]
                augmented[r] = [a - factor * b for a, b in zip(augmented[r], augmented[column])]
    return [row[n:] for row in augmented]


@dataclasses.dataclass(frozen=True)
class WinogradTransforms:
    """The three exact transform matrices of F(m x m, r x r), as tuples of Fractions.

    Attributes:
      tile_size: m, the side of an output tile.
      kernel_size: r, the side of the spatial kernel (always 3 here).
      input_tile_size: a = m + r - 1, the side of an input tile and of a Winograd-domain kernel.
      BT: a x a input transform B^T.
      G: a x r kernel transform.
      AT: m x a output transform A^T.
    """
    tile_size: int
    kernel_size: int
    input_tile_size: int
    BT: tuple
    G: tuple
    AT: tuple

    def as_numpy(self, dtype=np.float64):
        """Returns (BT, G, AT) as numpy arrays of `dtype`."""
        return tuple(np.array([[float(v) for v in row] for row in m], dtype=dtype)
                     for m in (self.BT, self.G, self.AT))


@functools.lru_cache(maxsize=None)
def winograd_transforms(tile_size, kernel_size=KERNEL_SIZE):
    """Builds the exact transforms of F(tile_size x tile_size, kernel_size x kernel_size)."""
    m = check_tile_size(tile_size)
    r = int(kernel_size)
    if r != KERNEL_SIZE:
        raise ValueError(f"`kernel_size` must be {KERNEL_SIZE}. Received: kernel_size={kernel_size!r}")
    n = m + r - 1
    points = INTERPOLATION_POINTS[m]
    assert len(points) == n - 1

    scale = []
    for j, p in enumerate(points):
        product = _F(1)
        for l, q in enumerate(points):
            if l != j:
                product *= p - q
        scale.append(1 / product)
    if scale[0] < 0:
        scale[0] = -scale[0]
    scale.append(_F(1))  # The point at infinity is not scaled in G.
    sign = [_F(1)] * (n - 1) + [_F(_INFINITY_SIGN[m])]

    kernel_eval = _evaluation_matrix(points, r)
    G = [[scale[j] * v for v in row] for j, row in enumerate(kernel_eval)]
    AT = [[v * sign[j] for j, v in enumerate(row)]
          for row in _transpose(_evaluation_matrix(points, m))]
    BT_unscaled = _transpose(_inverse(_evaluation_matrix(points, n)))
    BT = [[v * sign[j] / scale[j] for v in row] for j, row in enumerate(BT_unscaled)]
    freeze = lambda matrix: tuple(tuple(row) for row in matrix)
    return WinogradTransforms(m, r, n, freeze(BT), freeze(G), freeze(AT))


def transform_matrices(tile_size, dtype=np.float64):
    """Returns (BT, G, AT) of F(tile_size x tile_size, 3 x 3) as numpy arrays."""
    return winograd_transforms(tile_size).as_numpy(dtype)


def kernel_gradient_scale(tile_size):
    """|G_i|^2 |G_j|^2 for every Winograd coordinate (i, j): an (a, a) float64 array.

    It is the diagonal of K K^T, K = G (x) G (U = G g G^T = K g). SGD on the spatial kernel g
    moves U by K K^T times U's gradient; plain SGD on U moves it by the gradient itself, so its
    step on coordinate (i, j), relative to a spatial step, is 1 / (|G_i|^2 |G_j|^2): 1-1.8 at
    F(2x2), but 1-750 at F(4x4), where G's rows are small (1/24, 1/12, 1/6) and A's large (2, 4,
    8). Multiplying U's gradient by this array brings those steps to about a spatial step's
    scale on the transforms of 3x3 kernels (the diagonal of K K^T, not all of it: U's other
    directions still move further than that).
    """
    _, G, _ = transform_matrices(tile_size)
    row_norms = np.sum(G ** 2, axis=1)
    return np.outer(row_norms, row_norms)


def input_tile_size(tile_size):
    """a = m + 2: the side of an input tile and of the Winograd-domain kernel."""
    return check_tile_size(tile_size) + KERNEL_SIZE - 1


def kernel_to_winograd(spatial_kernel, tile_size):
    """U = G g G^T for a spatial kernel of shape (3, 3, in, out), in float64 numpy.

    Returns an array of shape (a, a, in, out).
    """
    g = np.asarray(spatial_kernel, dtype=np.float64)
    if g.ndim != 4 or g.shape[:2] != (KERNEL_SIZE, KERNEL_SIZE):
        raise ValueError("`spatial_kernel` must have shape (3, 3, in_channels, filters). "
                         f"Received: spatial_kernel.shape={g.shape}")
    _, G, _ = transform_matrices(tile_size)
    return np.einsum("iu,uvcf,jv->ijcf", G, g, G)
