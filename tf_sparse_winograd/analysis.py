"""Multiply accounting: `count_multiplies(model, dataset=None)`, the paper's operation counts.

For every layer that multiplies (convolutions and dense layers), per image:

  * direct multiplies: a direct convolution, Ho * Wo * kh * kw * C_in * C_out (a dense layer:
    C_in * C_out per position);
  * Winograd multiplies: F(m x m, 3 x 3) on ceil(Ho/m) * ceil(Wo/m) tiles, tiles * a^2 * C_in *
    C_out with a = m + 2. For a WinogradConv2D m is its tile_size; for a 3x3 stride-1 Conv2D it is
    the `tile_size` argument (what the same network would cost with Winograd, the paper's
    Figure 1a); other layers cost the same as direct;
  * weight density: the fraction of nonzero kernel weights (the Winograd-domain kernel U of a
    WinogradConv2D), through a pruning wrapper if there is one (the mask is applied);
  * activation density, measured on `dataset`: where the multiplies happen, i.e. for a
    WinogradConv2D the transformed input tiles V = B^T d B (after the Winograd-domain ReLU for
    `winograd_relu` layers; without it V is nearly dense, which is the paper's point), for other
    layers the spatial input. The spatial input density of every conv is reported as well;
  * effective multiplies: (Winograd multiplies for Winograd layers, direct otherwise) x weight
    density x activation density (1 when no dataset is given).

VGG-nagadomi on 32x32x3 gives 2.28e8 direct conv multiplies + 5.2e6 FC = 2.3e8, and 1.1e8 with
F(2x2, 3x3): the paper's numbers.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_winograd import pruning
from tf_sparse_winograd import transforms
from tf_sparse_winograd import winograd_math
from tf_sparse_winograd.layers import WinogradConv2D


@dataclasses.dataclass
class LayerCount:
    """Multiply counts of one layer, per image."""
    name: str
    kind: str  # 'winograd', 'winograd_relu', 'conv3x3', 'conv', 'dense'
    input_shape: tuple
    output_shape: tuple
    direct_multiplies: int
    winograd_multiplies: int
    weight_density: float
    activation_density: float = None  # Where the multiplies happen; None without a dataset.
    activation_density_std: float = None
    spatial_activation_density: float = None  # Of the layer's (spatial) input.
    spatial_activation_density_std: float = None
    effective_multiplies: float = None

    @property
    def is_winograd(self):
        return self.kind in ("winograd", "winograd_relu")

    @property
    def executed_multiplies(self):
        """What the layer as built costs densely: Winograd count for Winograd layers."""
        return self.winograd_multiplies if self.is_winograd else self.direct_multiplies


@dataclasses.dataclass
class MultiplyCount:
    """Per-layer counts and totals (per image). `str()` is the printed table."""
    layers: list
    tile_size: int
    measured: bool

    @property
    def total_direct(self):
        return sum(l.direct_multiplies for l in self.layers)

    @property
    def total_winograd(self):
        return sum(l.winograd_multiplies for l in self.layers)

    @property
    def total_executed(self):
        return sum(l.executed_multiplies for l in self.layers)

    @property
    def total_effective(self):
        return sum(l.effective_multiplies for l in self.layers)

    def as_dict(self):
        return {"tile_size": self.tile_size, "activations_measured": self.measured,
                "total_direct": self.total_direct, "total_winograd": self.total_winograd,
                "total_executed": self.total_executed, "total_effective": self.total_effective,
                "layers": [dataclasses.asdict(l) for l in self.layers]}

    def format_table(self, markdown=False):
        head = ["layer", "type", "input", "direct", "winograd", "w.density", "act.density",
                "effective"]
        rows = []
        fmt_d = lambda d: "-" if d is None else f"{d:.3f}"
        for l in self.layers:
            rows.append([l.name, l.kind, "x".join(str(d) for d in l.input_shape),
                         f"{l.direct_multiplies:.3e}", f"{l.winograd_multiplies:.3e}",
                         fmt_d(l.weight_density), fmt_d(l.activation_density),
                         f"{l.effective_multiplies:.3e}"])
        rows.append(["total", "", "", f"{self.total_direct:.3e}", f"{self.total_winograd:.3e}",
                     "", "", f"{self.total_effective:.3e}"])
        note = (f"Multiplies per image. 'winograd' counts F({self.tile_size}x{self.tile_size},3x3) "
                "for spatial 3x3 convs. 'effective' = (winograd for Winograd layers, else direct) "
                "x weight density x activation density"
                + ("" if self.measured else " (activations not measured: density 1)") + ". "
                f"Reduction vs dense direct: {self.total_direct / max(self.total_effective, 1):.2f}x.")
        if markdown:
            lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            return "\n".join(lines) + "\n\n" + note
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths)))
        return "\n".join([line(head)] + [line(r) for r in rows] + [note])

    def __str__(self):
        return self.format_table()


def weight_density(layer):
    """Fraction of nonzero entries of the layer's kernel (Winograd kernel; a wrapper's mask
    applied)."""
    kernel = pruning.effective_kernel(layer)
    return float(np.count_nonzero(kernel)) / kernel.size


def _shape(tensor):
    return tuple(int(d) for d in tensor.shape[1:])


def _is_spatial_winograd_candidate(conv):
    """A 3x3, stride-1, dilation-1, ungrouped 2-D convolution: what F(m x m, 3 x 3) computes."""
    return (type(conv) is keras.layers.Conv2D  # pylint: disable=unidiomatic-typecheck
            and tuple(conv.kernel_size) == (3, 3) and tuple(conv.strides) == (1, 1)
            and tuple(conv.dilation_rate) == (1, 1) and conv.groups == 1)


def _static_count(layer, tile_size):
    """A LayerCount without activation figures, or None for a layer that does not multiply."""
    inner = pruning.unwrap(layer)
    is_winograd = isinstance(inner, WinogradConv2D)
    if not (is_winograd or isinstance(inner, keras.layers.Dense) or pruning.is_convolution(inner)):
        return None
    in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    kernel_size = int(np.prod(pruning.prunable_weights(inner)[0].shape))
    # Every kernel entry multiplies once per output position (per input position for a
    # transposed convolution, which scatters each input over the kernel's window).
    transposed = isinstance(inner, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                                    keras.layers.Conv3DTranspose))
    positions = int(np.prod((in_shape if transposed else out_shape)[:-1]))
    if is_winograd:
        kind = "winograd_relu" if inner.winograd_relu else "winograd"
        direct = int(np.prod(out_shape[:-1])) * 9 * in_shape[-1] * inner.filters
        winograd = _winograd_multiplies(out_shape, in_shape[-1], inner.filters, inner.tile_size)
    elif isinstance(inner, keras.layers.Dense):
        kind = "dense"
        direct = winograd = positions * kernel_size
    else:
        direct = positions * kernel_size
        if _is_spatial_winograd_candidate(inner):
            kind = "conv3x3"
            winograd = _winograd_multiplies(out_shape, in_shape[-1], inner.filters, tile_size)
        else:
            kind = "conv"
            winograd = direct
    return LayerCount(inner.name, kind, in_shape, out_shape, int(direct), int(winograd),
                      weight_density(layer))


def _winograd_multiplies(out_shape, in_channels, filters, tile_size):
    m = tile_size
    tiles = math.ceil(out_shape[0] / m) * math.ceil(out_shape[1] / m)
    return tiles * (m + 2) ** 2 * in_channels * filters


def _per_example_density(x):
    x = tf.reshape(tf.cast(tf.not_equal(x, 0), tf.float32), [tf.shape(x)[0], -1])
    return tf.reduce_mean(x, axis=1)


def _transformed_density(x, inner):
    """Per-example density of the Winograd-domain input V of a WinogradConv2D."""
    v = winograd_math.transformed_input(x, inner.tile_size, inner.padding, inner.winograd_relu)
    a2 = tf.shape(v)[0]
    v = tf.reshape(v, [a2, tf.shape(x)[0], -1])  # Tiles are ordered (n, th, tw).
    return tf.reduce_mean(tf.cast(tf.not_equal(v, 0), tf.float32), axis=[0, 2])


class _InputProbe:
    """images -> [input of each layer] for layers anywhere in a model, nested models included.

    One probe model per (nested) model reads the inputs of the wanted layers directly in it and
    the inputs of the nested models holding others, which are then probed in turn.
    """

    def __init__(self, model, layers):
        self.model = model
        wanted = {id(layer) for layer in layers}
        self.members = []  # (layer, None) or (nested model, its _InputProbe)
        for member in model.layers:
            if isinstance(member, keras.Model):
                nested = _InputProbe(member, layers)
                if nested.members:
                    self.members.append((member, nested))
            elif id(member) in wanted:
                self.members.append((member, None))
        # The model's own input tensors (`model.input` of a nested model is its input in the
        # outer model).
        own_inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.probe = (keras.Model(own_inputs, [m.input for m, _ in self.members])
                      if self.members else None)

    def __call__(self, images):
        """{layer: its input tensor} for `images`."""
        if self.probe is None:
            return {}
        values = self.probe(images, training=False)
        if len(self.members) == 1:
            values = [values]
        found = {}
        for (member, nested), value in zip(self.members, values):
            if nested is None:
                found[id(member)] = value
            else:
                found.update(nested(value))
        return found


def measure_activation_density(model, layers, dataset, max_batches=None):
    """{layer name: (spatial densities, multiply-site densities)} per example, over `dataset`.

    `layers` may lie in nested models; names are those of the layers inside any pruning wrapper.
    A layer called more than once in the model is measured at its first call.
    """
    probe = _InputProbe(model, layers)

    @tf.function(reduce_retracing=True)
    def densities(images):
        inputs = probe(images)
        out = {}
        for layer in layers:
            if id(layer) not in inputs:
                continue
            x = inputs[id(layer)]
            spatial = _per_example_density(x)
            inner = pruning.unwrap(layer)
            site = _transformed_density(x, inner) if isinstance(inner, WinogradConv2D) else spatial
            out[pruning.unwrap(layer).name] = (spatial, site)
        return out

    collected = {}
    for i, batch in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        for name, (spatial, site) in densities(images).items():
            collected.setdefault(name, ([], []))
            collected[name][0].append(spatial.numpy())
            collected[name][1].append(site.numpy())
    return {name: (np.concatenate(spatial), np.concatenate(site))
            for name, (spatial, site) in collected.items()}


def count_multiplies(model, dataset=None, tile_size=2, max_batches=None, print_table=False,
                     print_fn=print):
    """Counts multiplies per image of `model`, layer by layer (see the module docstring).

    Args:
      model: a built Sequential or functional Keras model (pruning-wrapped or stripped);
        layers of nested models are counted too. A layer called several times is counted once,
        at its first call.
      dataset: optional iterable of image batches or (image, label) batches; activation densities
        are measured on it (inference mode).
      tile_size: m used to count the Winograd cost of spatial 3x3 stride-1 convolutions.
      max_batches: measure on at most this many batches.
      print_table: print the table with `print_fn`.
    Returns:
      A MultiplyCount (str() gives the table, `as_dict()` plain data).
    """
    pruning.check_model(model, "count_multiplies")
    tile_size = transforms.check_tile_size(tile_size)
    layers, counts = [], []
    for layer in pruning.walk_layers(model):
        count = _static_count(layer, tile_size)
        if count is not None:
            layers.append(layer)
            counts.append(count)
    measured = dataset is not None and bool(layers)
    if measured:
        densities = measure_activation_density(model, layers, dataset, max_batches)
        measured = bool(densities)
        for c in counts:
            if c.name in densities:
                s, w = densities[c.name]
                c.spatial_activation_density = float(s.mean())
                c.spatial_activation_density_std = float(s.std())
                c.activation_density = float(w.mean())
                c.activation_density_std = float(w.std())
    for c in counts:
        act = c.activation_density if c.activation_density is not None else 1.0
        c.effective_multiplies = float(c.executed_multiplies * c.weight_density * act)
    result = MultiplyCount(counts, tile_size, measured)
    if print_table:
        print_fn(result.format_table())
    return result
