#!/usr/bin/python3
"""Accuracy against mean latency: per-sample early exit (cascades over a confidence threshold)
beside the 12 fixed (width, depth) cells.

    /usr/bin/python3 tools/plot_early_exit.py early-exit.csv [--title T] [--out docs/early-exit-sentiment]

Reads the CSV of examples/early_exit.cpp (dynabert_early_exit) and writes OUT.png and OUT.svg
(default: beside the CSV). Fixed cells are points joined per depth, each width labelled once on
the depth-1 line; each cascade is a line over its thresholds, the lowest and highest threshold
labelled; error bars are 95 % Wilson intervals; the caption gives n.
"""
import argparse
import csv
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from plot_grid import wilson  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--title", default="Per-sample early exit vs fixed cells")
    ap.add_argument("--out", default=None, help="output path without extension (default: beside the CSV)")
    a = ap.parse_args()
    with open(a.csv) as f:
        rows = list(csv.DictReader(f))
    n = int(rows[0]["n_test"])
    cells = [r for r in rows if r["kind"] == "cell"]
    cascades = {}
    for r in rows:
        if r["kind"] == "cascade":
            cascades.setdefault(r["cascade"], []).append(r)

    def err(accs):
        lo_hi = [wilson(x, n) for x in accs]
        return [[100 * (x - lo) for x, (lo, _) in zip(accs, lo_hi)], [100 * (hi - x) for x, (_, hi) in zip(accs, lo_hi)]]

    plt.rcParams.update({"font.size": 9})
    fig, ax = plt.subplots(figsize=(7.4, 5.4))
    colours = {1.0: "tab:blue", 0.75: "tab:orange", 0.5: "tab:green"}
    for d in sorted({float(r["depth"]) for r in cells}, reverse=True):
        cs = sorted((r for r in cells if float(r["depth"]) == d), key=lambda r: float(r["mean_ms"]))
        x = [float(r["mean_ms"]) for r in cs]
        y = [float(r["accuracy"]) for r in cs]
        ax.errorbar(x, [100 * v for v in y], yerr=err(y), fmt="o-", color=colours.get(d, "0.5"), capsize=2, lw=1.2, ms=4,
                    elinewidth=0.7, alpha=0.75, label=f"fixed cells, depth {d:g}")
        if d == 1.0:
            for r in cs:
                ax.annotate(f"w {float(r['width']):g}", (float(r["mean_ms"]), 100 * float(r["accuracy"])),
                            textcoords="offset points", xytext=(4, -11), fontsize=7, color=colours[d])
    styles = ["s-", "D-", "v-", "P-"]
    ccols = ["tab:red", "tab:purple", "tab:brown", "tab:olive"]
    for k, (name, rs) in enumerate(cascades.items()):
        rs = sorted(rs, key=lambda r: float(r["threshold"]))
        x = [float(r["mean_ms"]) for r in rs]
        y = [float(r["accuracy"]) for r in rs]
        label = "early exit " + " -> ".join(f"({c.replace('x', ', ')})" for c in name.split(","))
        eb = ax.errorbar(x, [100 * v for v in y], yerr=err(y), fmt=styles[k % 4], color=ccols[k % 4], capsize=2, lw=1.6,
                         ms=4, elinewidth=0.7, label=label)
        for bar in eb[2]:
            bar.set_alpha(0.4)
        for r in (rs[0], rs[-1]):
            ax.annotate(f"t {float(r['threshold']):g}", (float(r["mean_ms"]), 100 * float(r["accuracy"])),
                        textcoords="offset points", xytext=(5, 4 if k == 0 else -12), fontsize=7, color=ccols[k % 4])
    ax.set_xscale("log")  # the cascades crowd near the cheapest cell: a log axis separates them
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""))
    ax.set_xlabel("mean latency per text, batch 1, one thread (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.text(0.01, 0.01, f"n = {n} test texts; error bars: 95 % Wilson intervals; t = confidence threshold "
             "(probability of the top label)", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    base = a.out or os.path.splitext(a.csv)[0]
    for ext in ("png", "svg"):
        fig.savefig(f"{base}.{ext}", dpi=150)
    print(f"wrote {base}.png and {base}.svg")


if __name__ == "__main__":
    main()
