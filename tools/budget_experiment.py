#!/usr/bin/python3
"""The latency-budget experiment of docs/budget.md: dynabert_serve holding a budget while a second
process loads the CPU, next to a fixed full-size model that misses it; once choosing among the FP32
cells only, once with precision as a dimension of the grid (FP32, BF16 and INT8 cells).

    /usr/bin/python3 tools/budget_experiment.py [--budget-ms 80] [--threads 2] [--calls 150]

Model: BERT-base dimensions (.data/bert-base-random, made by `dynabert_run --generate` when
missing; latency does not depend on the weights' values). Accuracy grid: the DynaBERT paper's
MNLI-m dev accuracies per (width, depth) (Table 1), which only decide the order of preference; the
BF16 and INT8 cells get the same accuracy minus BF16_DROP and INT8_DROP points (an assumption of
this experiment, of the size measured on the trained models in docs/results.md).
Texts: Brown corpus passages of about 150 words, truncated to 128 tokens. Each run serves 3 x
--calls texts: idle, then with one busy-looping process per core started beside it, then idle
again. Writes docs/budget.png, docs/budget.svg and the table between the markers in docs/budget.md.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# DynaBERT (BERT-base) MNLI-m dev accuracy, paper Table 1: rows width, columns depth 1.0/0.75/0.5
PAPER_MNLI = {1.0: (84.9, 84.4, 83.7), 0.75: (84.7, 84.3, 83.6), 0.5: (84.7, 84.2, 83.0), 0.25: (83.9, 83.4, 82.0)}
BF16_DROP, INT8_DROP = 0.05, 0.3
DROP = {"fp32": 0.0, "bf16": BF16_DROP, "int8": INT8_DROP}


def brown_passages(n, words=150):
    folder = os.path.join(ROOT, ".data", "brown", "package")
    if not os.path.isdir(folder):
        sys.exit("budget_experiment: run scripts/fetch-data.sh brown first")
    toks = []
    for f in sorted(os.listdir(folder)):
        if len(f) == 4 and f[0] == "c" and f[2:].isdigit():
            for t in open(os.path.join(folder, f), encoding="utf-8", errors="replace").read().split():
                toks.append(t.rsplit("/", 1)[0])
            if len(toks) > n * words:
                break
    return [" ".join(toks[i * words:(i + 1) * words]) for i in range(n)]


def serve(exe, model, vocab, grid, texts, calls, threads, log, extra):
    """Feeds texts one at a time; starts the CPU load after `calls` answers, stops it after 2 x calls."""
    cmd = [exe, "--model", model, "--vocab", vocab, "--threads", str(threads), "--grid", grid, "--log", log] + extra
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    load = []
    for i, t in enumerate(texts):
        if i == calls:
            load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count())]
        if i == 2 * calls:
            for q in load:
                q.kill()
            load = []
        p.stdin.write(t + "\n")
        p.stdin.flush()
        if not p.stdout.readline():
            break
    for q in load:
        q.kill()
    p.stdin.close()
    err = p.stderr.read()
    if p.wait() != 0:
        sys.exit(f"budget_experiment: {' '.join(cmd)} failed:\n{err}")
    with open(log) as f:
        return list(csv.DictReader(f)), err


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-ms", type=float, default=80.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=150, help="calls per phase (idle, loaded, idle)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    a = ap.parse_args()
    exe = os.path.join(a.build, "examples", "dynabert_serve")
    model = os.path.join(ROOT, ".data", "bert-base-random")
    vocab = os.path.join(ROOT, ".data", "vocab")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        subprocess.run([os.path.join(a.build, "examples", "dynabert_run"), "--generate", model, "--preset", "base",
                        "--labels", "2"], check=True)
    texts = brown_passages(3 * a.calls)
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        grid = os.path.join(d, "grid.json")
        with open(grid, "w") as f:
            f.write("[" + ",".join(f'{{"width":{w},"depth":{dd},"accuracy":{acc - DROP[p]:.2f},"precision":"{p}"}}'
                                   for p in DROP for w, accs in PAPER_MNLI.items()
                                   for dd, acc in zip((1.0, 0.75, 0.5), accs)) + "]")
        for name, extra in (("budget", ["--budget-ms", str(a.budget_ms), "--precision", "fp32"]),
                            ("precision", ["--budget-ms", str(a.budget_ms), "--precision", "auto"]),
                            ("fixed", ["--width", "1", "--depth", "1"])):
            rows, err = serve(exe, model, vocab, grid, texts, a.calls, a.threads, os.path.join(d, name + ".csv"), extra)
            runs[name] = rows
            print(f"== {name}: {len(rows)} calls", file=sys.stderr)
            if name != "fixed":
                print(err, file=sys.stderr)
    acc = {(w, dd, p): x - DROP[p] for p in DROP for w, accs in PAPER_MNLI.items() for dd, x in zip((1.0, 0.75, 0.5), accs)}
    phases = [("idle", 0, a.calls), ("CPU loaded", a.calls, 2 * a.calls), ("idle again", 2 * a.calls, 3 * a.calls)]
    lines = [f"Budget {a.budget_ms:g} ms per call, {a.threads} threads, BERT-base dimensions, 128-token texts, "
             f"{a.calls} calls per phase; load: {os.cpu_count()} busy-looping processes.", "",
             "| phase | server | median ms | p90 ms | calls within budget | mean grid accuracy of the cells used | "
             "calls in FP32 / BF16 / INT8 |",
             "|---|---|---:|---:|---:|---:|---|"]
    names = {"budget": "budget controller, FP32 cells", "precision": "budget controller, FP32/BF16/INT8 cells",
             "fixed": "fixed full size, FP32"}
    for ph, lo, hi in phases:
        for name in ("budget", "precision", "fixed"):
            rows = runs[name][lo:hi]
            ms = [float(r["measured_ms"]) for r in rows]
            within = sum(m <= a.budget_ms for m in ms) / max(len(ms), 1)
            mean_acc = sum(acc[(float(r["width"]), float(r["depth"]), r["precision"])] for r in rows) / max(len(rows), 1)
            p90 = sorted(ms)[int(0.9 * (len(ms) - 1))] if ms else float("nan")
            used = " / ".join(str(sum(r["precision"] == p for r in rows)) for p in DROP)
            lines.append(f"| {ph} | {names[name]} | {median(ms):.1f} | {p90:.1f} | {100 * within:.0f} % | {mean_acc:.2f} | {used} |")
    table = "\n".join(lines)
    print(table)
    doc = os.path.join(ROOT, "docs", "budget.md")
    text = open(doc).read()
    b, e = "<!-- BEGIN budget_experiment -->", "<!-- END budget_experiment -->"
    text = text[:text.index(b) + len(b)] + "\n" + table + "\n" + text[text.index(e):]
    with open(doc, "w") as f:
        f.write(text)
    plot(runs, a, acc)


def plot(runs, a, acc):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for name, style in (("fixed", dict(color="tab:red", alpha=0.6, label="fixed full-size model (FP32)")),
                        ("budget", dict(color="tab:blue", alpha=0.7, label="budget controller, FP32 cells")),
                        ("precision", dict(color="tab:green", label="budget controller, FP32/BF16/INT8 cells"))):
        rows = runs[name]
        ax.plot([int(r["call"]) for r in rows], [float(r["measured_ms"]) for r in rows], ".-", ms=2, lw=0.6, **style)
    ax.axhline(a.budget_ms, color="k", ls="--", lw=1, label=f"budget {a.budget_ms:g} ms")
    for x in (ax, ax2):
        x.axvspan(a.calls, 2 * a.calls, color="orange", alpha=0.12)
    ax.set_ylabel("latency per call (ms)")
    ax.set_title("Holding a latency budget while another process loads the CPU (shaded)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    rows = runs["precision"]
    ax2.plot([int(r["call"]) for r in rows], [float(r["width"]) for r in rows], "-", label="width m_w")
    ax2.plot([int(r["call"]) for r in rows], [float(r["depth"]) for r in rows], "-", label="depth m_d")
    bits = {"fp32": 1.0, "bf16": 0.5, "int8": 0.25}
    ax2.plot([int(r["call"]) for r in rows], [bits[r["precision"]] for r in rows], "-", label="precision (1 FP32, .5 BF16, .25 INT8)")
    ax2.set_ylabel("cell used\n(FP32/BF16/INT8 run)")
    ax2.set_xlabel("call")
    ax2.set_ylim(0, 1.1)
    ax2.legend(fontsize=8, loc="lower left")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(ROOT, "docs", f"budget.{ext}"), dpi=130)
    print("wrote docs/budget.png and docs/budget.svg", file=sys.stderr)


if __name__ == "__main__":
    main()
