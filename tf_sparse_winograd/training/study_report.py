"""Tables, claim checks and figures of a multi-seed study (experiments/sparse_winograd_study.py).

The study JSON holds one record per finished unit (architecture, seed, method, density): the
final accuracy, the multiply table, and for pruned points the accuracy right after one-shot
pruning; dense records carry their validation curve. This module aggregates the seeds of each
point (mean and sample standard deviation; the accuracy change is paired: each seed's pruned
model against its own dense model), checks the paper's claims (a)-(e) of issue 16 and draws:

  * study_accuracy_vs_density.png: test accuracy after retraining vs density, mean +- std over
    seeds, per architecture; gradual pruning dashed; right after one-shot pruning dotted;
  * study_accuracy_vs_multiplies.png: the same accuracies against effective multiplies per image
    (claim (e): at equal density the architectures do different work);
  * study_dense_curves.png: test accuracy after every dense epoch, one line per seed;
  * study_activation_density.png: per conv layer, the activation density where the multiplies
    happen, of the dense models (mean over seeds).

Nothing here imports TensorFlow (report.py runs without it).
"""

import collections
import json
import os
import statistics

ARCH_ORDER = ("spatial", "winograd", "winograd_relu", "winograd_relu_f4")
ARCH_LABELS = {"spatial": "spatial (Fig. 1a)", "winograd": "winograd F(2x2) (Fig. 1b)",
               "winograd_relu": "winograd_relu F(2x2) (Fig. 1c)",
               "winograd_relu_f4": "winograd_relu F(4x4)"}
COLORS = {"spatial": "tab:blue", "winograd": "tab:orange", "winograd_relu": "tab:green",
          "winograd_relu_f4": "tab:red"}
# Claim (a): 'keeps its dense accuracy' = on average over the seeds within max(HOLD_POINTS, one
# standard deviation of the seeds) of each seed's own dense model; claim (b): 'loses accuracy' =
# on average more than LOSS_POINTS below it.
HOLD_POINTS = 0.003
LOSS_POINTS = 0.005
CONV_KINDS = ("conv3x3", "winograd", "winograd_relu")


def load_study(path):
    with open(path) as f:
        return json.load(f)


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _conv_layers(layers):
    return [l for l in layers if l["kind"] in CONV_KINDS]


def activation_density(layers, skip_first=True):
    """(mean over conv layers, multiply-weighted overall) activation density at the multiplies.

    The first conv reads the image (no ReLU before it), so it is left out by default, as in the
    paper, whose Winograd-domain ReLU starts at layer 2.
    """
    convs = _conv_layers(layers)[1 if skip_first else 0:]
    convs = [l for l in convs if l.get("activation_density") is not None]
    if not convs:
        return None, None
    mean = statistics.fmean(l["activation_density"] for l in convs)
    executed = [(l["winograd_multiplies"] if l["kind"] != "conv3x3" else l["direct_multiplies"])
                for l in convs]
    weighted = sum(e * l["activation_density"] for e, l in zip(executed, convs)) / sum(executed)
    return mean, weighted


def dense_by_arch(study):
    """{arch: {seed: dense record}}."""
    out = collections.defaultdict(dict)
    for r in study["runs"]:
        if r["method"] == "dense":
            out[r["arch"]][r["seed"]] = r
    return out


def points(study):
    """One dict per (arch, method, density), seeds aggregated; dense points included."""
    dense = dense_by_arch(study)
    groups = collections.defaultdict(list)
    for r in study["runs"]:
        groups[(r["arch"], r["method"], r["density"])].append(r)
    rows = []
    for (arch, method, density), records in groups.items():
        records.sort(key=lambda r: r["seed"])
        acc = [r["final"]["eval_accuracy"] for r in records]
        pruned = [r.get("after_pruning", {}).get("eval_accuracy") for r in records]
        deltas = [r["final"]["eval_accuracy"] - dense[arch][r["seed"]]["final"]["eval_accuracy"]
                  for r in records if r["seed"] in dense.get(arch, {})]
        dense_acc = [dense[arch][s]["final"]["eval_accuracy"] for s in sorted(dense.get(arch, {}))]
        act = [activation_density(r["final"]["layers"]) for r in records]
        row = {"arch": arch, "method": method, "density": density,
               "seeds": [r["seed"] for r in records],
               "accuracy": mean_std(acc), "accuracy_pruned": mean_std(pruned),
               "delta_vs_dense": mean_std(deltas), "dense_accuracy": mean_std(dense_acc),
               "multiplies_direct": records[0]["final"]["multiplies_direct"],
               "multiplies_executed": records[0]["final"]["multiplies_executed"],
               "multiplies_effective": mean_std([r["final"]["multiplies_effective"]
                                                 for r in records]),
               "activation_density": mean_std([a[0] for a in act]),
               "activation_density_weighted": mean_std([a[1] for a in act]),
               "layer_weight_density": _mean_layers(records, "weight_density"),
               "layer_activation_density": _mean_layers(records, "activation_density"),
               "eval_examples": records[0]["final"]["eval_examples"],
               "train_examples": records[0]["final"]["train_examples"]}
        row["reduction"] = row["multiplies_direct"] / row["multiplies_effective"][0]
        rows.append(row)
    order = {a: i for i, a in enumerate(ARCH_ORDER)}
    methods = {"dense": 0, "one_shot": 1, "gradual": 2}
    rows.sort(key=lambda r: (order.get(r["arch"], 99), methods[r["method"]], -r["density"]))
    return rows


def _mean_layers(records, key):
    """{layer name: mean over seeds} of a per-layer quantity, in layer order."""
    values = collections.OrderedDict()
    for r in records:
        for layer in r["final"]["layers"]:
            if layer.get(key) is not None:
                values.setdefault(layer["name"], []).append(layer[key])
    return {name: statistics.fmean(v) for name, v in values.items()}


def speed_of(study, arch, method, density, batch):
    """Speed-up of the point's exported model against the dense spatial SavedModel, or None."""
    speed = study.get("speed")
    if not speed:
        return None
    seed = speed["seed"]
    name = (f"{arch}-s{seed}-dense" if method == "dense"
            else f"{arch}-s{seed}-{method}-d{density:g}")
    entry = speed["batches"].get(str(batch), {}).get(name)
    return entry and entry["speedup_vs_dense_spatial"]


def _pct(ms, digits=2):
    mean, std = ms
    if mean is None:
        return "-"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _signed_pct(ms):
    mean, std = ms
    if mean is None:
        return "-"
    return f"{100 * mean:+.2f} ± {100 * std:.2f}"


def markdown_table(study, rows=None):
    rows = rows if rows is not None else points(study)
    lines = ["| architecture | pruning | density | seeds | acc. after pruning (%) | "
             "acc. after retraining (%) | change vs own dense (points) | effective multiplies | "
             "reduction vs dense direct | act. density (conv2-8) | speed-up b1 | speed-up b32 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        s1 = speed_of(study, r["arch"], r["method"], r["density"], 1)
        s32 = speed_of(study, r["arch"], r["method"], r["density"], 32)
        lines.append(
            f"| {r['arch']} | {r['method'].replace('_', '-')} | {r['density']:g} | "
            f"{len(r['seeds'])} | {_pct(r['accuracy_pruned'])} | {_pct(r['accuracy'])} | "
            f"{'-' if r['method'] == 'dense' else _signed_pct(r['delta_vs_dense'])} | "
            f"{r['multiplies_effective'][0]:.3e} | {r['reduction']:.2f}x | "
            f"{r['activation_density'][0]:.3f} | "
            f"{'-' if s1 is None else f'{s1:.2f}x'} | {'-' if s32 is None else f'{s32:.2f}x'} |")
    return "\n".join(lines)


def per_seed_table(study, rows=None):
    """Test accuracy of every point per seed, right after pruning -> after retraining (%)."""
    rows = rows if rows is not None else points(study)
    by_key = {(r["arch"], r["method"], r["density"], r["seed"]): r for r in study["runs"]}
    seeds = sorted({r["seed"] for r in study["runs"]})
    lines = ["| architecture | pruning | density | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean after retraining | vs own dense (points) | effective multiplies |",
             "| --- | --- | ---: | " + " | ".join("---" for _ in seeds) + " | ---: | ---: | ---: |"]
    for r in rows:
        cells = []
        for seed in seeds:
            record = by_key.get((r["arch"], r["method"], r["density"], seed))
            if record is None:
                cells.append("")
                continue
            final = f"{100 * record['final']['eval_accuracy']:.2f}"
            pruned = record.get("after_pruning", {}).get("eval_accuracy")
            cells.append(final if pruned is None else f"{100 * pruned:.2f} -> {final}")
        delta = "" if r["method"] == "dense" else f"{100 * r['delta_vs_dense'][0]:+.2f}"
        lines.append(f"| {r['arch']} | {r['method'].replace('_', '-')} | {r['density']:g} | "
                     + " | ".join(cells) + f" | {100 * r['accuracy'][0]:.2f} | {delta} | "
                     f"{r['multiplies_effective'][0]:.2e} |")
    return "\n".join(lines)


def weight_density_table(rows):
    """Per-layer weight density of every pruned point (mean over seeds)."""
    pruned = [r for r in rows if r["method"] != "dense"]
    if not pruned:
        return ""
    names = list(pruned[0]["layer_weight_density"])
    lines = ["| architecture | pruning | density | " + " | ".join(names) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(names)]
    for r in pruned:
        cells = [f"{r['layer_weight_density'].get(n, float('nan')):.3f}" for n in names]
        lines.append(f"| {r['arch']} | {r['method']} | {r['density']:g} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def holds(row):
    """Claim (a)'s test: the change against each seed's own dense model, averaged, is within
    max(HOLD_POINTS, the seeds' std) of zero.

    Paired by seed because a point's seeds need not be all the dense seeds (a stand-in seed's
    dense model is not the mean of the others').
    """
    delta, _ = row["delta_vs_dense"]
    _, std = row["accuracy"]
    _, dense_std = row["dense_accuracy"]
    return delta >= -max(HOLD_POINTS, std or 0.0, dense_std or 0.0)


def loses(row):
    """Claim (b)'s test: on average more than LOSS_POINTS below each seed's own dense model."""
    return row["delta_vs_dense"][0] < -LOSS_POINTS


def claims(study, method="one_shot"):
    """Claims (a)-(e) per architecture for one pruning method: a dict of plain values."""
    rows = points(study)
    out = {}
    for arch in ARCH_ORDER:
        arch_rows = sorted((r for r in rows if r["arch"] == arch and r["method"] == method),
                           key=lambda r: -r["density"])
        dense_rows = [r for r in rows if r["arch"] == arch and r["method"] == "dense"]
        if not arch_rows or not dense_rows:
            continue
        lowest_held = None
        for r in arch_rows:  # from the highest density down; 'holds' must hold all the way
            if not holds(r):
                break
            lowest_held = r["density"]
        first_loss = next((r["density"] for r in arch_rows if loses(r)), None)
        held_row = next((r for r in arch_rows if r["density"] == lowest_held), None)
        dense = dense_rows[0]
        out[arch] = {
            "dense_accuracy": dense["accuracy"],
            "densities": [r["density"] for r in arch_rows],
            "seeds": sorted({s for r in arch_rows for s in r["seeds"]}),
            "lowest_density_holding": lowest_held,
            "first_density_losing_0.5": first_loss,
            "reduction_at_lowest_holding": held_row["reduction"] if held_row else None,
            "effective_multiplies_at_lowest_holding":
                held_row["multiplies_effective"][0] if held_row else None,
            "dense_activation_density": dense["activation_density"],
            "dense_activation_density_weighted": dense["activation_density_weighted"],
            "dense_reduction": dense["reduction"],
        }
    return out


def claims_markdown(study, method="one_shot"):
    c = claims(study, method)
    lines = ["| architecture | dense acc. (%) | lowest density within max(0.3 pt, 1 std) | "
             "first density losing > 0.5 pt | reduction of effective multiplies there | "
             "dense act. density conv2-8 (mean / multiply-weighted) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for arch, v in c.items():
        held = "none" if v["lowest_density_holding"] is None else f"{v['lowest_density_holding']:g}"
        loss = ("none of " + ",".join(f"{d:g}" for d in v["densities"])
                if v["first_density_losing_0.5"] is None else f"{v['first_density_losing_0.5']:g}")
        red = "-" if v["reduction_at_lowest_holding"] is None else \
            f"{v['reduction_at_lowest_holding']:.2f}x"
        act = v["dense_activation_density"][0]
        actw = v["dense_activation_density_weighted"][0]
        lines.append(f"| {arch} | {_pct(v['dense_accuracy'])} | {held} | {loss} | {red} | "
                     f"{'-' if act is None else f'{act:.3f} / {actw:.3f}'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, ax, path, legend_loc):
    """Adds the legend, writes the figure to `path` and closes it; returns `path`."""
    ax.legend(fontsize=7, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy(study, path, x_key="density", title=""):
    """Accuracy after retraining (mean +- std) against density or effective multiplies."""
    plt = _plt()
    rows = points(study)
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for arch in ARCH_ORDER:
        for method, style in (("one_shot", "o-"), ("gradual", "s--")):
            rs = [r for r in rows if r["arch"] == arch and r["method"] in (method, "dense")]
            if not any(r["method"] == method for r in rs):
                continue
            rs.sort(key=lambda r: -r["density"])
            xs = [r["density"] if x_key == "density" else r["multiplies_effective"][0]
                  for r in rs]
            ys = [100 * r["accuracy"][0] for r in rs]
            es = [100 * r["accuracy"][1] for r in rs]
            label = ARCH_LABELS.get(arch, arch) + ("" if method == "one_shot" else ", gradual")
            ax.errorbar(xs, ys, yerr=es, fmt=style, color=COLORS.get(arch), capsize=3,
                        label=label, alpha=1.0 if method == "one_shot" else 0.7)
            pre = [(x, 100 * r["accuracy_pruned"][0]) for x, r in zip(xs, rs)
                   if method == "one_shot" and r["accuracy_pruned"][0] is not None]
            if pre and x_key == "density":
                ax.plot(*zip(*pre), "x:", color=COLORS.get(arch), alpha=0.5,
                        label=ARCH_LABELS.get(arch, arch) + ", right after pruning")
    if x_key == "density":
        ax.set_xlabel("weight density of the pruned layers (conv2-8)")
        ax.invert_xaxis()
        ax.set_xscale("log")
        ax.set_xticks([1.0, 0.6, 0.4, 0.25, 0.1, 0.05])
        ax.set_xticklabels(["1", "0.6", "0.4", "0.25", "0.1", "0.05"])
    else:
        ax.set_xlabel("effective multiplies per image (weight x activation density)")
        ax.set_xscale("log")
        ax.invert_xaxis()
    ax.set_ylabel("test accuracy after retraining (%), mean ± std of seeds")
    # The limits frame the retrained accuracies; accuracies right after pruning fall far below.
    accuracies = [100 * r["accuracy"][0] for r in rows]
    ax.set_ylim(max(min(accuracies, default=80) - 1.0, 0),
                min(max(accuracies, default=100) + 0.5, 100))
    ax.grid(alpha=0.3)
    ax.set_title(title or ("Accuracy vs density" if x_key == "density"
                           else "Accuracy vs effective multiplies"))
    return _save(plt, fig, ax, path, legend_loc="lower left")


def plot_dense_curves(study, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for arch, seeds in sorted(dense_by_arch(study).items(),
                              key=lambda kv: ARCH_ORDER.index(kv[0]) if kv[0] in ARCH_ORDER else 9):
        for i, (seed, record) in enumerate(sorted(seeds.items())):
            curve = [(p["epoch"], 100 * p["val_accuracy"]) for p in record.get("curve", [])
                     if p.get("val_accuracy") is not None]
            if curve:
                ax.plot(*zip(*curve), "-", color=COLORS.get(arch), alpha=0.8,
                        label=ARCH_LABELS.get(arch, arch) if i == 0 else None)
    ax.set_xlabel("dense epoch")
    ax.set_ylabel("test accuracy (%) after the epoch")
    ax.set_ylim(85, None)
    ax.grid(alpha=0.3)
    ax.set_title("Dense training: test accuracy per epoch, one line per seed")
    return _save(plt, fig, ax, path, legend_loc="lower right")


def plot_activation_density(study, path):
    import numpy as np
    plt = _plt()
    dense = [r for r in points(study) if r["method"] == "dense"]
    if not dense:
        return None
    names = [n for n in dense[0]["layer_activation_density"] if n.startswith("conv")]
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    width = 0.8 / len(dense)
    for k, r in enumerate(dense):
        values = [r["layer_activation_density"].get(n, float("nan")) for n in names]
        ax.bar(np.arange(len(names)) + (k - (len(dense) - 1) / 2) * width, values, width,
               color=COLORS.get(r["arch"]), label=ARCH_LABELS.get(r["arch"], r["arch"]))
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("activation density at the multiplies")
    ax.set_ylim(0, 1.2)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Dense models: activation density per conv layer (mean of seeds)")
    return _save(plt, fig, ax, path, legend_loc="upper right")


def dense_curve_table(study):
    """Per arch: test accuracy at a few epochs (mean of seeds), to show the curves flattening."""
    rows = []
    for arch, seeds in dense_by_arch(study).items():
        curves = [[p["val_accuracy"] for p in r.get("curve", [])] for r in seeds.values()]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        marks = sorted({e for e in (1, 2, 4, 8, n // 2, n - 5, n - 2, n) if 1 <= e <= n})
        rows.append((arch, len(curves),
                     {e: statistics.fmean(c[e - 1] for c in curves) for e in marks}))
    if not rows:
        return ""
    marks = sorted({e for _, _, m in rows for e in m})
    lines = ["| architecture | seeds | " + " | ".join(f"epoch {e}" for e in marks) + " |",
             "| --- | ---: |" + " ---: |" * len(marks)]
    for arch, n, m in sorted(rows, key=lambda r: ARCH_ORDER.index(r[0])
                             if r[0] in ARCH_ORDER else 9):
        lines.append(f"| {arch} | {n} | " + " | ".join(
            f"{100 * m[e]:.2f}" if e in m else "-" for e in marks) + " |")
    return "\n".join(lines)


def speed_markdown(study):
    speed = study.get("speed")
    if not speed:
        return "(no speed pass yet)"
    lines = [f"CPU: {speed['cpu']}, {speed['threads']} threads, TensorFlow "
             f"{speed['tensorflow']}, seed {speed['seed']}, best of {speed['rounds']} "
             f"interleaved rounds, {speed['date']}; other processes' load "
             f"{speed['other_load_before']:.2f} CPUs before, "
             f"{speed.get('other_load_after', float('nan')):.2f} after.", "",
             "| model | batch 1 ms | speed-up | batch 32 ms | speed-up |",
             "| --- | ---: | ---: | ---: | ---: |"]
    b1, b32 = speed["batches"].get("1", {}), speed["batches"].get("32", {})
    for name in b1:
        one, many = b1[name], b32.get(name)
        lines.append(f"| {name} | {one['best_ms']:.2f} | {one['speedup_vs_dense_spatial']:.2f}x"
                     f" | {many['best_ms']:.2f} | {many['speedup_vs_dense_spatial']:.2f}x |"
                     if many else f"| {name} | {one['best_ms']:.2f} | - | - | - |")
    return "\n".join(lines)


def make_study_report(study_path, out_dir):
    """Writes the figures and study_report.md into out_dir; returns the markdown."""
    study = load_study(study_path)
    if not study.get("runs"):
        raise FileNotFoundError(f"{study_path} has no finished runs yet")
    os.makedirs(out_dir, exist_ok=True)
    rows = points(study)
    figures = [plot_accuracy(study, os.path.join(out_dir, "study_accuracy_vs_density.png")),
               plot_accuracy(study, os.path.join(out_dir, "study_accuracy_vs_multiplies.png"),
                             x_key="multiplies"),
               plot_dense_curves(study, os.path.join(out_dir, "study_dense_curves.png")),
               plot_activation_density(study,
                                       os.path.join(out_dir, "study_activation_density.png"))]
    progress = study.get("progress", {})
    text = "\n\n".join([
        f"Units done: {progress.get('done')} of {progress.get('units')}.",
        "## Accuracy, multiplies and speed per point (mean ± std over seeds)",
        markdown_table(study, rows),
        "## Test accuracy per seed (%), right after pruning -> after retraining",
        per_seed_table(study, rows),
        "## Claims (one-shot pruning)", claims_markdown(study, "one_shot"),
        "## Claims (gradual pruning)", claims_markdown(study, "gradual"),
        "## Dense test accuracy (%) by epoch (mean of seeds)", dense_curve_table(study),
        "## Weight density per layer (mean of seeds)", weight_density_table(rows),
        "## Inference speed of the exported models", speed_markdown(study),
        "\n".join(f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures if f),
    ]) + "\n"
    with open(os.path.join(out_dir, "study_report.md"), "w") as f:
        f.write(text)
    return text
