#!/usr/bin/python3
"""Accuracy-versus-latency plot of the DynaBERT grid (like the paper's latency figure).

    /usr/bin/python3 tools/plot_grid.py out/sentiment/results.csv [--title T]   # writes results.png and .svg beside it

Reads the CSV written by examples/train_dynabert.cpp (width, depth, latency_ms, accuracy,
baseline_accuracy) and draws, per depth, accuracy against measured latency for every width, with
the same cells taken from the teacher without DynaBERT training as a dashed comparison.
"""
import argparse
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default="out/sentiment/results.csv")
    ap.add_argument("--title", default="Accuracy vs latency of the 12 (width, depth) cells")
    args = ap.parse_args()
    path = args.csv
    with open(path) as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colours = {1.0: "tab:blue", 0.75: "tab:orange", 0.5: "tab:green"}
    for d in sorted({r["depth"] for r in rows}, reverse=True):
        cell = sorted((r for r in rows if r["depth"] == d), key=lambda r: r["latency_ms"])
        x = [r["latency_ms"] for r in cell]
        ax.plot(x, [100 * r["accuracy"] for r in cell], "o-", color=colours.get(d), label=f"DynaBERT, depth {d:g}")
        ax.plot(x, [100 * r["baseline_accuracy"] for r in cell], "x--", color=colours.get(d), alpha=0.5,
                label=f"teacher's sub-networks, depth {d:g}")
        for r in cell:
            ax.annotate(f"w{r['width']:g}", (r["latency_ms"], 100 * r["accuracy"]), textcoords="offset points",
                        xytext=(3, 4), fontsize=7)
    ax.set_xlabel("latency, batch 1 (ms, median)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    base = os.path.splitext(path)[0]
    for ext in ("png", "svg"):
        fig.savefig(f"{base}.{ext}", dpi=150)
    print(f"wrote {base}.png and {base}.svg")


if __name__ == "__main__":
    main()
