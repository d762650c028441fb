"""`sparsity_report(model)`: per-layer density of the prunable weights."""

import dataclasses

import keras
import numpy as np

from tf_sparse_winograd.pruning import view


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """One prunable weight: `density` is the fraction of non-zero entries of the weight.

    `mask_density` is the fraction of ones in the pruning mask (None for an unwrapped layer).
    """
    layer: str
    layer_class: str
    weight: str
    shape: tuple
    size: int
    nonzero: int
    density: float
    mask_density: float = None
    pruned: bool = False


class SparsityReport(list):
    """A list of `LayerSparsity` rows with a printable table and lookups."""

    def density(self, layer_name):
        """Density over all prunable weights of the layer named `layer_name`."""
        rows = [r for r in self if r.layer == layer_name]
        if not rows:
            raise KeyError(layer_name)
        return sum(r.nonzero for r in rows) / sum(r.size for r in rows)

    @property
    def total_density(self):
        size = sum(r.size for r in self)
        return sum(r.nonzero for r in self) / size if size else float("nan")

    def as_dicts(self):
        return [dataclasses.asdict(r) for r in self]

    def __str__(self):
        header = ("layer", "class", "weight", "shape", "size", "nonzero", "density", "mask")
        lines = [header]
        for r in self:
            lines.append((r.layer, r.layer_class, r.weight, "x".join(map(str, r.shape)),
                          str(r.size), str(r.nonzero), f"{r.density:.4f}",
                          "-" if r.mask_density is None else f"{r.mask_density:.4f}"))
        lines.append(("total", "", "", "", str(sum(r.size for r in self)),
                      str(sum(r.nonzero for r in self)), f"{self.total_density:.4f}", ""))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                         for row in lines)


def _short(name):
    return name.split("/")[-1].split(":")[0]


def _rows_for(layer):
    if not view.is_prunable(layer) or not layer.built:
        return []
    inner = view.unwrap(layer)
    layer_masks = view.masks(layer)
    rows = []
    for index, (weight, value) in enumerate(zip(view.prunable_weights(layer),
                                                view.effective_weights(layer))):
        nonzero = int(np.count_nonzero(value))
        mask_density = None if layer_masks is None else float(np.mean(layer_masks[index]))
        rows.append(LayerSparsity(inner.name, type(inner).__name__, _short(weight.name),
                                  tuple(value.shape), int(value.size), nonzero,
                                  nonzero / value.size, mask_density, layer_masks is not None))
    return rows


def sparsity_report(model):
    """Per-layer density of the prunable weights of a wrapped or stripped model (or one layer).

    Nested models are included. Returns a `SparsityReport` (a list of `LayerSparsity`);
    `print()` it for a table.
    """
    if isinstance(model, keras.Model):
        layers = view.walk_layers(model)
    elif isinstance(model, keras.layers.Layer):
        layers = [model]
    else:
        raise TypeError("`sparsity_report` expects a Keras model or layer. "
                        f"Received: model={model!r} (type {type(model).__name__})")
    report = SparsityReport()
    for layer in layers:
        report.extend(_rows_for(layer))
    return report
