#!/usr/bin/python3
"""One training step, dynabert vs PyTorch, same run; writes a block of docs/performance.md.

    /usr/bin/python3 tools/compare_train.py --bench build/release/bench/dynabert_bench

Small BERT (4 layers, hidden 256, 4 heads, FFN 1024, vocabulary 30,522), sequence 128, batch 16
and 32: forward with dropout 0.1, cross-entropy, backward, clip_grad_norm_(1.0), AdamW. PyTorch:
Debian's torch with autograd and torch.optim.AdamW, OpenBLAS threads pinned like its own
(see compare_peers.py), 1 and 2 threads. dynabert: bench/bench_train.cpp, as its trainer runs a
loss on the logits (the last layer computes the first tokens only: same logits and gradients),
and at batch 32 also computing every row of the last layer, as PyTorch does.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_peers import machine, time_median, torch_env  # noqa: E402

H, L, NH, FF, V, S = 256, 4, 4, 1024, 30522, 128


def worker(threads, batches, reps):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    P = lambda *s: (torch.randn(*s, generator=g) * 0.02).requires_grad_(True)
    Z = lambda *s: torch.zeros(*s).requires_grad_(True)
    O = lambda *s: torch.ones(*s).requires_grad_(True)
    params = {"word": P(V, H), "pos": P(512, H), "type": P(2, H), "eg": O(H), "eb": Z(H),
              "pw": P(H, H), "pb": Z(H), "cw": P(2, H), "cb": Z(2)}
    layers = []
    for l in range(L):
        d = {"q": P(H, H), "k": P(H, H), "v": P(H, H), "o": P(H, H), "i": P(FF, H), "f": P(H, FF),
             "qb": Z(H), "kb": Z(H), "vb": Z(H), "ob": Z(H), "ib": Z(FF), "fb": Z(H),
             "g1": O(H), "b1": Z(H), "g2": O(H), "b2": Z(H)}
        layers.append(d)
        params.update({f"{l}.{k}": v for k, v in d.items()})
    opt = torch.optim.AdamW(params.values(), lr=2e-5, eps=1e-8, weight_decay=0.0)
    p = params

    def step(ids, labels):
        B = ids.shape[0]
        h = F.dropout(F.layer_norm(p["word"][ids] + p["pos"][:S][None] + p["type"][0][None, None], (H,), p["eg"], p["eb"], 1e-12), 0.1)
        for x in layers:
            sp = lambda t: t.view(B, S, NH, H // NH).transpose(1, 2)
            q, k, v = sp(F.linear(h, x["q"], x["qb"])), sp(F.linear(h, x["k"], x["kb"])), sp(F.linear(h, x["v"], x["vb"]))
            probs = F.dropout(torch.softmax(q @ k.transpose(-1, -2) / 8.0, -1), 0.1)
            ctx = (probs @ v).transpose(1, 2).reshape(B, S, H)
            h1 = F.layer_norm(F.dropout(F.linear(ctx, x["o"], x["ob"]), 0.1) + h, (H,), x["g1"], x["b1"], 1e-12)
            h = F.layer_norm(F.dropout(F.linear(F.gelu(F.linear(h1, x["i"], x["ib"])), x["f"], x["fb"]), 0.1) + h1, (H,), x["g2"], x["b2"], 1e-12)
        logits = F.linear(torch.tanh(F.linear(h[:, 0], p["pw"], p["pb"])), p["cw"], p["cb"])
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()

    res = []
    for B in batches:
        ids = torch.randint(0, V, (B, S), generator=g)
        labels = torch.arange(B) % 2
        step(ids, labels)
        res.append({"batch": B, "threads": threads, "ms": time_median(lambda: step(ids, labels), reps)})
    print(json.dumps({"torch": torch.__version__, "results": res}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/release/bench/dynabert_bench")
    ap.add_argument("--out", default="docs/performance.md")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--worker", type=int)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.batches, a.reps)
    # dynabert and PyTorch in alternating rounds: both meet the same spells of load
    dyn_rounds, torch_rounds, version = [], [], "?"
    for r in range(a.rounds):
        out = subprocess.run([a.bench, "--benchmark_filter=BM_TrainStep", "--benchmark_format=json"], check=True,
                             capture_output=True, text=True)
        dyn = {}
        for b in json.loads(out.stdout)["benchmarks"]:
            if b.get("aggregate_name") == "median":
                parts = dict(kv.split(":") for kv in b["run_name"].split("/")[1:] if ":" in kv)
                dyn[(int(parts["batch"]), int(parts["threads"]), int(parts.get("first_token", 0)))] = b["real_time"]
        dyn_rounds.append(dyn)
        tm = {}
        for t in (1, 2):
            rr = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(t), "--reps", str(a.reps),
                                 "--batches", *map(str, a.batches)], env=torch_env(t), check=True, capture_output=True, text=True)
            data = json.loads(rr.stdout.strip().splitlines()[-1])
            version = data["torch"]
            for x in data["results"]:
                tm[(x["batch"], t)] = x["ms"]
        torch_rounds.append(tm)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    med = lambda rounds, k: statistics.median(x[k] for x in rounds)  # noqa: E731
    lines = ["<!-- generated by tools/compare_train.py -->", "## One training step: dynabert vs PyTorch, same run", "",
             f"Command: `/usr/bin/python3 tools/compare_train.py --bench {a.bench} --rounds {a.rounds}`. Machine: {machine()}. "
             f"PyTorch {version} (Debian, OpenBLAS AVX-512 kernels as above).", "",
             "Small BERT (4 layers, hidden 256, 4 heads, FFN 1024, vocabulary 30,522), sequence 128: forward with "
             "dropout, cross-entropy, backward, clipping, AdamW. dynabert and PyTorch alternate in rounds; each figure is "
             "the median over the rounds (dynabert: median of 3 Google Benchmark repetitions after a warm-up step; "
             "PyTorch: median of repeated steps after one warm-up). Speed-up = PyTorch ms / dynabert ms; "
             "\"rounds\": in how many rounds the speed-up met the bar of its thread count. \"last layer\": "
             "\"first tokens\" is what dynabert's trainer runs for a loss on the logits (the last layer computes each "
             "sequence's first token only, the pooler's input; keys and values still use every token; same logits, "
             "gradients equal to rounding); \"every row\" computes the whole last layer, as PyTorch does.", "",
             "| batch | threads | last layer | dynabert ms | PyTorch ms | speed-up | bar | rounds |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    bars = {1: 1.5, 2: 1.8}
    missed = []
    # the bar is judged on what the trainer runs (first tokens); a bench without that argument
    # (an older build) computes every row, and is judged on that
    judged = 1 if any(k[2] == 1 for k in dyn_rounds[0]) else 0
    for B in a.batches:
        for first in (1, 0):
            for t in (1, 2):
                if (B, t, first) not in dyn_rounds[0]:
                    continue
                d, p = med(dyn_rounds, (B, t, first)), med(torch_rounds, (B, t))
                ok = sum(1 for x, y in zip(dyn_rounds, torch_rounds) if y[(B, t)] / x[(B, t, first)] >= bars[t])
                if B == 32 and first == judged and p / d < bars[t]:
                    missed.append(f"batch 32 x{t}")
                kind = "first tokens" if first else "every row"
                lines.append(f"| {B} | {t} | {kind} | {d:.0f} | {p:.0f} | {p / d:.2f}x | {bars[t]}x | {ok}/{a.rounds} |")
    lines += ["", "Bars of the one-engine issue (batch 32: at least 1.5x PyTorch on one thread and 1.8x on two), "
              f"judged on the {'first-token' if judged else 'every-row'} step: " +
              ("met" if not missed else "NOT met for " + ", ".join(missed))]
    text = "\n".join(lines)
    print(text, flush=True)
    doc = open(a.out).read() if os.path.exists(a.out) else "# Performance\n"
    begin, end = "<!-- BEGIN compare_train -->", "<!-- END compare_train -->"
    block = f"{begin}\n{text}\n{end}"
    doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):] if begin in doc else doc.rstrip() + "\n\n" + block + "\n"
    with open(a.out + ".tmp", "w") as f:
        f.write(doc)
    os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
