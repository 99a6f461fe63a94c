#!/usr/bin/python3
"""Accuracy-versus-latency plot of the DynaBERT grid (like the paper's latency figure).

    /usr/bin/python3 tools/plot_grid.py out/sentiment/results.csv [--title T]   # writes results.png and .svg beside it

Reads the CSV written by examples/train_dynabert.cpp and draws, per depth, accuracy against the
measured latency of every width in FP32 (solid, with 95 % Wilson intervals as error bars when the
CSV has n_test) and in INT8 (dotted, triangles, when it has int8 columns), the same cells taken
from the teacher without DynaBERT training (dashed, faint) and the teacher itself (a horizontal
line). Each width is labelled once, on the depth-1 line; the caption gives n.
"""
import argparse
import csv
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def wilson(acc, n, z=1.96):
    """95 % Wilson interval of an accuracy measured on n examples: (low, high)."""
    c = (acc + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default="out/sentiment/results.csv")
    ap.add_argument("--title", default="Accuracy vs latency of the 12 (width, depth) cells")
    args = ap.parse_args()
    path = args.csv
    with open(path) as f:
        rows = [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]
    n = rows[0].get("n_test", float("nan"))
    plt.rcParams.update({"font.size": 9})
    fig, ax = plt.subplots(figsize=(7.4, 5.6))
    colours = {1.0: "tab:blue", 0.75: "tab:orange", 0.5: "tab:green"}
    has_int8 = all(math.isfinite(r.get("int8_latency_ms", float("nan"))) for r in rows)
    for d in sorted({r["depth"] for r in rows}, reverse=True):
        cell = sorted((r for r in rows if r["depth"] == d), key=lambda r: r["latency_ms"])
        x = [r["latency_ms"] for r in cell]
        y = [100 * r["accuracy"] for r in cell]
        c = colours.get(d)
        if math.isfinite(n):
            lo_hi = [wilson(r["accuracy"], n) for r in cell]
            err = [[yy - 100 * lo for yy, (lo, _) in zip(y, lo_hi)], [100 * hi - yy for yy, (_, hi) in zip(y, lo_hi)]]
            ax.errorbar(x, y, yerr=err, fmt="o-", color=c, capsize=2, lw=1.6, ms=5, elinewidth=0.8, alpha=0.95,
                        label=f"DynaBERT FP32, depth {d:g}")
        else:
            ax.plot(x, y, "o-", color=c, label=f"DynaBERT FP32, depth {d:g}")
        if has_int8:
            c8 = sorted(cell, key=lambda r: r["int8_latency_ms"])
            ax.plot([r["int8_latency_ms"] for r in c8], [100 * r["int8_accuracy"] for r in c8], "^:", color=c, ms=4,
                    alpha=0.8, label=f"DynaBERT INT8, depth {d:g}")
        if all(math.isfinite(r["baseline_accuracy"]) for r in cell):
            ax.plot(x, [100 * r["baseline_accuracy"] for r in cell], "x--", color=c, alpha=0.35, lw=0.9,
                    label=f"teacher's sub-networks, depth {d:g}")
        if d == 1.0:  # each width labelled once, on the depth-1 line
            for r in cell:
                ax.annotate(f"w {r['width']:g}", (r["latency_ms"], 100 * r["accuracy"]), textcoords="offset points",
                            xytext=(4, -11), fontsize=8, color=c)
    teacher = rows[0].get("teacher_accuracy", float("nan"))
    if math.isfinite(teacher):
        ax.axhline(100 * teacher, color="0.3", ls=":", lw=1, label=f"teacher, full size ({100 * teacher:.1f} %)")
    ax.set_xlabel("latency per example, batch 1, one thread (ms, median of 101 calls)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    # legend below the axes, grouped by kind (FP32, INT8, teacher's cells), so that no data is hidden
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (0 if "FP32" in labels[i] else 1 if "INT8" in labels[i] else
                                                       2 if "sub-networks" in labels[i] else 3, i))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    if math.isfinite(n):
        fig.text(0.01, 0.01, f"n = {n:.0f} test examples; error bars: 95 % Wilson intervals of the FP32 accuracies",
                 fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    base = os.path.splitext(path)[0]
    for ext in ("png", "svg"):
        fig.savefig(f"{base}.{ext}", dpi=150)
    print(f"wrote {base}.png and {base}.svg")


if __name__ == "__main__":
    main()
