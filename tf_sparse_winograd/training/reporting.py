"""The paper's Figure 2 and 3 for a set of runs, and a markdown summary (behind report.py).

Reads every results.json under the given directories (as written by train.py), groups them by
conv type and density and produces:

  * figure2_accuracy_vs_density.png: test accuracy after retraining vs weight density of the
    pruned layers, one line per conv type (the paper's Figure 2); accuracy right after pruning,
    before retraining, as dotted lines;
  * figure3_activation_density.png: per conv layer, the activation density where the multiplies
    happen (the spatial input for 'spatial', the transformed input V for the Winograd types), with
    whiskers of one standard deviation over test images (the paper's Figure 3);
  * a markdown table of accuracy and multiplies per conv type and density, and one of the
    activation densities.
"""

import collections
import json
import os

CONV_TYPE_ORDER = ("spatial", "winograd", "winograd_relu")
LABELS = {"spatial": "spatial conv, spatial ReLU (Fig. 1a)",
          "winograd": "Winograd-domain weights, spatial ReLU (Fig. 1b)",
          "winograd_relu": "Winograd-domain weights and ReLU (Fig. 1c)"}


def collect_results(directories):
    """All results.json dicts under `directories`, each with its 'path' added."""
    found = []
    for top in directories:
        for root, _, files in os.walk(top):
            if "results.json" in files:
                with open(os.path.join(root, "results.json")) as f:
                    result = json.load(f)
                result["path"] = root
                found.append(result)
    return found


def _nominal_density(result):
    d = result.get("density") or [1.0]
    return sum(d) / len(d)


def table_rows(results):
    """One row per (conv_type, density): accuracies after pruning and retraining, multiplies."""
    by_key = collections.defaultdict(dict)
    for r in results:
        if r["phase"] in ("prune", "retrain"):
            by_key[(r["conv_type"], round(_nominal_density(r), 4))][r["phase"]] = r
    rows = []
    for (conv_type, density), phases in by_key.items():
        final = phases.get("retrain") or phases.get("prune")
        m = final["multiplies"]
        rows.append({
            "conv_type": conv_type, "density": density,
            "accuracy_pruned": phases["prune"]["eval_accuracy"] if "prune" in phases else None,
            "accuracy": phases["retrain"]["eval_accuracy"] if "retrain" in phases else None,
            "multiplies_direct": m["total_direct"], "multiplies_executed": m["total_executed"],
            "multiplies_effective": m["total_effective"],
            "reduction": m["total_direct"] / max(m["total_effective"], 1.0),
            "eval_examples": final["eval_examples"], "train_examples": final["train_examples"],
            "result": final})
    order = {c: i for i, c in enumerate(CONV_TYPE_ORDER)}
    rows.sort(key=lambda r: (order.get(r["conv_type"], 99), -r["density"]))
    return rows


def markdown_table(rows):
    fmt = lambda v, f: "-" if v is None else format(v, f)
    lines = ["| conv type | density | acc. after pruning | acc. after retraining | "
             "multiplies as executed (dense) | effective multiplies | reduction vs dense direct |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['conv_type']} | {r['density']:g} | {fmt(r['accuracy_pruned'], '.4f')} | "
                     f"{fmt(r['accuracy'], '.4f')} | {r['multiplies_executed']:.3e} | "
                     f"{r['multiplies_effective']:.3e} | {r['reduction']:.2f}x |")
    return "\n".join(lines)


def activation_rows(rows, density):
    """{conv_type: [(layer, mean, std)]} of conv layers at `density` (the closest available)."""
    out = {}
    for conv_type in CONV_TYPE_ORDER:
        candidates = [r for r in rows if r["conv_type"] == conv_type]
        if not candidates:
            continue
        row = min(candidates, key=lambda r: abs(r["density"] - density))
        layers = [l for l in row["result"]["multiplies"]["layers"]
                  if l["kind"] in ("winograd", "winograd_relu", "conv3x3")
                  and l["activation_density"] is not None]
        out[conv_type] = [(l["name"], l["activation_density"], l["activation_density_std"])
                          for l in layers]
    return out


def activation_markdown(act):
    names = []
    for layers in act.values():
        for name, _, _ in layers:
            if name not in names:
                names.append(name)
    lines = ["| conv type | " + " | ".join(names) + " | mean |",
             "| --- |" + " ---: |" * (len(names) + 1)]
    for conv_type, layers in act.items():
        values = {n: (m, s) for n, m, s in layers}
        cells = [f"{values[n][0]:.3f} ± {values[n][1]:.3f}" if n in values else "-" for n in names]
        mean = sum(m for _, m, _ in layers) / max(len(layers), 1)
        lines.append(f"| {conv_type} | " + " | ".join(cells) + f" | {mean:.3f} |")
    return "\n".join(lines)


def plot_figure2(rows, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"spatial": "tab:blue", "winograd": "tab:orange", "winograd_relu": "tab:green"}
    for conv_type in CONV_TYPE_ORDER:
        rs = sorted((r for r in rows if r["conv_type"] == conv_type), key=lambda r: r["density"])
        if not rs:
            continue
        pts = [(r["density"], r["accuracy"]) for r in rs if r["accuracy"] is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", color=colors.get(conv_type), label=LABELS[conv_type])
        pre = [(r["density"], r["accuracy_pruned"]) for r in rs if r["accuracy_pruned"] is not None]
        if pre:
            ax.plot(*zip(*pre), "x:", color=colors.get(conv_type), alpha=0.6,
                    label=f"{conv_type}: pruned, before retraining")
    ax.set_xlabel("density of the pruned layers' weights")
    ax.set_ylabel("test accuracy")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.set_title(title or "Accuracy vs density (Figure 2)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_figure3(act, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    names = []
    for layers in act.values():
        for name, _, _ in layers:
            if name not in names:
                names.append(name)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    width = 0.8 / max(len(act), 1)
    colors = {"spatial": "tab:blue", "winograd": "tab:orange", "winograd_relu": "tab:green"}
    for k, (conv_type, layers) in enumerate(act.items()):
        values = {n: (m, s) for n, m, s in layers}
        xs = [i + (k - (len(act) - 1) / 2) * width for i, n in enumerate(names) if n in values]
        ms = [values[n][0] for n in names if n in values]
        ss = [values[n][1] for n in names if n in values]
        ax.bar(xs, ms, width, yerr=ss, capsize=2, color=colors.get(conv_type),
               label=LABELS.get(conv_type, conv_type))
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30)
    ax.set_ylabel("activation density at the multiplies")
    ax.set_ylim(0, 1.25)  # Room for the legend above the bars.
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Activation density per conv layer (Figure 3)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_report(directories, out_dir, activation_density=None, title=""):
    """Writes the two PNGs and report.md into out_dir; returns the markdown text."""
    results = collect_results(directories)
    rows = table_rows(results)
    if not rows:
        raise FileNotFoundError(f"No prune/retrain results.json under {directories}")
    os.makedirs(out_dir, exist_ok=True)
    if activation_density is None:
        activation_density = min(r["density"] for r in rows)
    act = activation_rows(rows, activation_density)
    fig2 = plot_figure2(rows, os.path.join(out_dir, "figure2_accuracy_vs_density.png"), title)
    fig3 = plot_figure3(act, os.path.join(out_dir, "figure3_activation_density.png"),
                        f"Activation density per conv layer at density {activation_density:g}")
    text = ("## Accuracy and multiplies per image\n\n" + markdown_table(rows) + "\n\n"
            f"## Activation density at the multiplies (weight density {activation_density:g}; "
            "mean ± std over test images)\n\n" + activation_markdown(act) + "\n\n"
            f"![Figure 2]({os.path.basename(fig2)})\n\n![Figure 3]({os.path.basename(fig3)})\n")
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    return text
