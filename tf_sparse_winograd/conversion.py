"""`to_winograd(model)`: a user's Keras CNN with every eligible convolution a `WinogradConv2D`.

A `keras.layers.Conv2D` is eligible when F(m x m, 3 x 3) computes exactly what it computes: a 3x3
kernel, stride 1, dilation 1, one group, 'same' or 'valid' padding, channels last, and nothing
that would act on the spatial kernel (a kernel constraint, LoRA, quantization). It becomes
`WinogradConv2D.from_conv2d(conv, tile_size)`: the same name, bias and activation, the kernel
transformed exactly (U = G g G^T in float64), so the outputs are the original's up to the tile
size's float32 rounding. Every other layer (strided, 1x1 and 7x7 convolutions, depthwise and
grouped ones, batch norm, pooling, the classifier) is copied as it is. Nested models are
converted too and shared layers stay shared.

The per-layer report (`ConversionReport`) lists every convolution: converted with which tile
size, or skipped and why.
"""

import dataclasses
import numbers

import keras

from tf_sparse_winograd import cloning
from tf_sparse_winograd import pruning
from tf_sparse_winograd import transforms
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D


@dataclasses.dataclass(frozen=True)
class LayerConversion:
    """One convolution of the model: `converted` with `tile_size`, or skipped for `reason`."""
    layer: str
    layer_class: str
    converted: bool
    tile_size: int = None
    reason: str = ""


class ConversionReport(list):
    """A list of `LayerConversion` rows, one per convolution, with a printable table."""

    @property
    def converted(self):
        return [row.layer for row in self if row.converted]

    @property
    def skipped(self):
        return {row.layer: row.reason for row in self if not row.converted}

    def __str__(self):
        header = ("layer", "class", "result")
        lines = [header] + [
            (row.layer, row.layer_class,
             f"WinogradConv2D F({row.tile_size}x{row.tile_size})" if row.converted
             else f"kept: {row.reason}") for row in self]
        widths = [max(len(line[i]) for line in lines) for i in range(2)]
        body = ["  ".join((line[0].ljust(widths[0]), line[1].ljust(widths[1]), line[2]))
                for line in lines]
        return "\n".join(body + [f"{len(self.converted)} of {len(self)} convolutions converted."])


def ineligibility(layer):
    """Why `layer` cannot become an exactly equivalent WinogradConv2D; None when it can."""
    if type(layer) is not keras.layers.Conv2D:  # pylint: disable=unidiomatic-typecheck
        # Depthwise, separable, transposed, 1-D/3-D convolutions, and subclasses of Conv2D (whose
        # call may compute something else).
        return f"a {type(layer).__name__}, not a keras.layers.Conv2D"
    if not layer.built:
        return "not built"
    config = layer.get_config()
    checks = (
        (tuple(layer.kernel_size) != (3, 3), f"kernel {'x'.join(map(str, layer.kernel_size))}, not 3x3"),
        (tuple(layer.strides) != (1, 1), f"strides {tuple(layer.strides)}"),
        (tuple(layer.dilation_rate) != (1, 1), f"dilation {tuple(layer.dilation_rate)}"),
        (layer.groups != 1, f"groups={layer.groups}"),
        (config.get("data_format", "channels_last") != "channels_last",
         f"data_format={config.get('data_format')!r}"),
        (layer.padding not in ("same", "valid"), f"padding={layer.padding!r}"),
        (layer.kernel_constraint is not None,
         "a kernel constraint (it acts on the spatial kernel, which a WinogradConv2D does not have)"),
        (getattr(layer, "lora_enabled", False), "LoRA enabled"),
        (getattr(layer, "quantization_mode", None) is not None,
         f"quantized ({getattr(layer, 'quantization_mode', None)})"),
    )
    return next((reason for failed, reason in checks if failed), None)


def _checked_tile_size(value, where):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(
            value) not in transforms.SUPPORTED_TILE_SIZES:
        raise ValueError(f"`tile_size` must be one of {transforms.SUPPORTED_TILE_SIZES} (or None to keep a "
                         f"layer). Received: tile_size={value!r}{where}")
    return int(value)


def _tile_size_for(tile_size, layer):
    if isinstance(tile_size, dict):
        return _checked_tile_size(tile_size.get(layer.name), f" for layer {layer.name!r}")
    if callable(tile_size):
        return _checked_tile_size(tile_size(layer), f" from the callable for layer {layer.name!r}")
    return tile_size


def layer_selection(layers, model):
    """A predicate layer -> bool from `layers` (None, names, or a predicate); checks the names."""
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError("`layers` must be None, a list of layer names or a callable layer -> bool. "
                        f"Received: layers={layers!r}")
    names = set(layers)
    unknown = names - {layer.name for layer in pruning.walk_layers(model)}
    if unknown:
        raise ValueError(f"`layers` names layers the model does not have: {sorted(unknown)}")
    return lambda layer: layer.name in names


def to_winograd(model, tile_size=2, layers=None, return_report=False, print_fn=None):
    """A new model in which every eligible convolution is an equivalent `WinogradConv2D`.

    Args:
      model: a built Sequential or functional Keras 3 model (nested models are converted too).
      tile_size: m of F(m x m, 3 x 3) for every converted layer: 2, 4 or 6; or a dict
        {layer name: m or None} (layers not named are kept), or a callable layer -> m or None.
        Larger tiles need fewer multiplies and round more (the float32 error of F(6x6) is
        about 100 times that of F(2x2); see docs/export.md).
      layers: which convolutions to convert: None (every eligible one), a list of layer names,
        or a callable layer -> bool.
      return_report: also return the `ConversionReport`.
      print_fn: a function to print the report with (e.g. `print`); None prints nothing.

    Returns:
      The converted model (a new model; the original is untouched), or (model, report) with
      `return_report=True`.

    Raises:
      TypeError: `model` is not a Keras model, or `layers` is not one of its accepted forms.
      ValueError: a subclassed or unbuilt model, a tile size not in (2, 4, 6), unknown layer names.
    """
    pruning.check_model(model, "to_winograd")
    if not isinstance(tile_size, dict) and not callable(tile_size):
        tile_size = _checked_tile_size(tile_size, "")
        if tile_size is None:
            raise ValueError("`tile_size` must be one of (2, 4, 6), a dict or a callable. "
                             "Received: tile_size=None")
    selected = layer_selection(layers, model)
    report = ConversionReport()

    def make_layer(layer):
        if not pruning.is_convolution(layer) or isinstance(layer, WinogradConv2D):
            return cloning.fresh_copy(layer)
        reason = ineligibility(layer)
        size = None
        if reason is None and not selected(layer):
            reason = "not selected (`layers`)"
        if reason is None:
            size = _tile_size_for(tile_size, layer)
            if size is None:
                reason = ("`tile_size` maps it to None" if isinstance(tile_size, dict)
                          and layer.name in tile_size else "no tile size given (`tile_size`)")
        report.append(LayerConversion(layer.name, type(layer).__name__, reason is None, size,
                                      reason or ""))
        if reason is not None:
            return cloning.fresh_copy(layer)
        return WinogradConv2D.from_conv2d(layer, tile_size=size), lambda new_layer: None

    converted = cloning.clone_with(model, make_layer)
    if print_fn is not None:
        print_fn(str(report))
    return (converted, report) if return_report else converted
