"""`fastest_tile_sizes(model, density)`: each convolution's tile size, chosen by a short measurement.

No tile size is best everywhere: a larger tile needs fewer multiplies per output (36 products per
4x4 outputs against 16 per 2x2) but wastes more of a small image's border and costs more per
tile in its transforms, and how much the products matter depends on the density. Nor is the
sparse op faster than the dense convolution everywhere: with 3 input channels (an RGB image) the
transforms cost more than the products save, and a small image at batch 1 reads the whole kernel
for a few tiles. So `to_winograd` takes a tile size per layer, or None to keep a layer, and this
module measures which is fastest: for every convolution `to_winograd` would convert, it times the
sparse op on that layer's input shape with a random kernel pruned at random to `density`, once
per candidate tile size, and `tf.nn.conv2d` with the dense kernel, and keeps the fastest (None
where the dense convolution wins). The measurement takes a few tenths of a second per layer and
candidate; run it on the machine (and with the thread settings) that will serve the model.

    sizes = tfsw.tile_choice.fastest_tile_sizes(model, density=0.3)
    winograd_model = tfsw.to_winograd(model, tile_size=sizes)
"""

import time

import numpy as np
import tensorflow as tf

from tf_sparse_winograd import conversion
from tf_sparse_winograd import ops
from tf_sparse_winograd import pruning
from tf_sparse_winograd import transforms


def _input_shape(layer):
    """(height, width, channels) the built layer was built for; ValueError if not all known."""
    shape = (layer.get_build_config() or {}).get("input_shape")
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            f"Layer {layer.name!r} was built for input shape {shape}: its height, width and "
            "channels must be known to time it. Pass `to_winograd` a tile size for it instead.")
    return tuple(int(d) for d in shape[1:])


# Convolutions per timed graph call, on distinct inputs: one call of a tf.function costs ~0.3 ms
# of dispatch, as much as a small layer's convolution at batch 1, and would decide the choice.
_CALLS_PER_GRAPH = 8
_GRAPH_INPUT_BYTES = 64 << 20  # at most this much input per graph call


def _seconds_per_convolution(conv, inputs, min_seconds):
    """The best of three samples of `conv` run on each of `inputs` in one graph call, each sample
    repeating the call for about `min_seconds`; per convolution."""
    fn = tf.function(lambda xs: [conv(x) for x in xs])
    fn(inputs)  # traces and warms up
    start = time.perf_counter()
    fn(inputs)[-1].numpy()
    repeats = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            outputs = fn(inputs)
        outputs[-1].numpy()
        best = min(best, (time.perf_counter() - start) / (repeats * len(inputs)))
    return best


def time_tile_sizes(input_shape, filters, padding, density, batch_size=1,
                    tile_sizes=transforms.SUPPORTED_TILE_SIZES, min_seconds=0.05, seed=0,
                    dense=False):
    """{tile size: seconds per call} of the sparse op on one layer shape.

    With `dense=True` the result also holds `None`: the seconds per call of `tf.nn.conv2d` with
    the dense kernel on the same inputs (what the layer costs if it is not converted).

    Args:
      input_shape: (height, width, in_channels) of the layer's input.
      filters: the layer's output channels.
      padding: 'same' or 'valid'.
      density: the fraction of the Winograd-domain kernel kept (pruned uniformly at random).
      batch_size: images per call.
      tile_sizes: the candidates.
      min_seconds: how long each of the three samples per tile size runs (each sample runs
        the convolution on up to 8 distinct inputs per graph call, so that the ~0.3 ms of a
        call's dispatch does not decide between tile sizes).
      seed: the random inputs' and kernel's seed.
      dense: also time the dense convolution, as `times[None]`.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"`density` must be in (0, 1]. Received: density={density!r}")
    rng = np.random.default_rng(seed)
    height, width, channels = input_shape
    shape = (batch_size, height, width, channels)
    count = max(1, min(_CALLS_PER_GRAPH, _GRAPH_INPUT_BYTES // (4 * int(np.prod(shape)))))
    inputs = [tf.constant(rng.standard_normal(shape, np.float32)) for _ in range(count)]
    kernel = rng.standard_normal((3, 3, channels, filters)) * np.sqrt(2.0 / (9 * channels))
    times = {}
    if dense:
        dense_kernel = tf.constant(kernel.astype(np.float32))
        times[None] = _seconds_per_convolution(
            lambda images: tf.nn.conv2d(images, dense_kernel, 1, padding.upper()), inputs,
            min_seconds)
    for m in tile_sizes:
        u = transforms.kernel_to_winograd(kernel, transforms.check_tile_size(m))
        u[rng.random(u.shape) >= density] = 0.0
        packed = ops.pack_kernel(u.astype(np.float32))

        def conv(images, packed=packed, m=m):
            return ops.sparse_winograd_conv2d(images, packed, tile_size=m, padding=padding.upper())
        times[m] = _seconds_per_convolution(conv, inputs, min_seconds)
    return times


def fastest_tile_sizes(model, density, batch_size=1, tile_sizes=transforms.SUPPORTED_TILE_SIZES,
                       layers=None, min_seconds=0.05, print_fn=None, keep_dense_when_faster=True):
    """{layer name: fastest tile size, or None} for every convolution `to_winograd` would convert.

    Args:
      model: a built Sequential or functional Keras model (what `to_winograd` takes); every
        convolution to time must have been built for a known height, width and channel count.
      density: the density the kernels will be pruned to (the first convolution is timed at it
        too, although it is usually left dense).
      batch_size: the batch size the model will serve.
      tile_sizes: the candidates (a subset of (2, 4, 6)).
      layers: as in `to_winograd`: None, a list of layer names, or a callable layer -> bool.
      min_seconds: how long each of three samples per layer and tile size runs.
      print_fn: a function to print one line per layer with (e.g. `print`); None prints nothing.
      keep_dense_when_faster: also time `tf.nn.conv2d` with the dense kernel and map a layer
        to None (`to_winograd` keeps it a Conv2D) where that is faster than every tile size.

    Returns:
      A dict for `to_winograd(model, tile_size=...)`.

    Raises:
      ops.OpLibraryError: the op library cannot be loaded (there is nothing to time).
      ValueError: a bad density or tile size, or a layer whose input shape is not fully known.
    """
    pruning.check_model(model, "fastest_tile_sizes")
    tile_sizes = tuple(transforms.check_tile_size(m) for m in tile_sizes)
    if not tile_sizes:
        raise ValueError("`tile_sizes` must name at least one tile size. Received: ()")
    ops.load_op_library()
    selected = conversion.layer_selection(layers, model)
    choice, seen = {}, set()
    for layer in pruning.walk_layers(model):
        if id(layer) in seen or not pruning.is_convolution(layer):
            continue
        seen.add(id(layer))
        if conversion.ineligibility(layer) is not None or not selected(layer):
            continue
        times = time_tile_sizes(_input_shape(layer), layer.filters, layer.padding, density,
                                batch_size, tile_sizes, min_seconds, dense=keep_dense_when_faster)
        choice[layer.name] = min(times, key=times.get)
        if print_fn is not None:
            print_fn(f"{layer.name}: " + ", ".join(
                f"{_candidate_name(m)} {t * 1e3:.3f} ms" for m, t in times.items())
                + f" -> {_candidate_name(choice[layer.name])}")
    return choice


def _candidate_name(tile_size):
    return "dense conv2d" if tile_size is None else f"F({tile_size}x{tile_size})"
