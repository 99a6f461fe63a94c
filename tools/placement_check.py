#!/usr/bin/python3
"""Two-thread times by where the two CPUs are (docs/performance.md, "Where the two CPUs are").

    /usr/bin/python3 tools/placement_check.py [--rounds 10] [--widths 1 0.5 0.25] [--ort]
        [--base-bench OTHER/dynabert_bench] [--precision int8]

In each round: dynabert's BM_BertBase at batch 1, two threads, depth 1 for each width (every
benchmark reports core_rtt_ns, the CPUs' round trip while it ran); with --base-bench the same for a
second build (e.g. one configured with -DDYNABERT_LOWP_SPLIT_ROWS=192); with --ort, ONNX Runtime
INT8 on the same cells, probed with BM_CoreRoundTrip before and after each cell's process (a cell
whose two probes disagree is left out). Prints each round, then the medians per program, width
and placement (near: round trip at most --near-max-ns), and ORT / dynabert within each placement.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_peers as cp  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dynabert_cells(bench, precision, widths):
    """{width: (ms, round trip ns)} of one run of the bench over the cells."""
    idx = "".join(str(cp.WIDTHS.index(w)) for w in widths)
    filt = f"BM_BertBase/precision:{precision}/batch:1/w:[{idx}]/d:0/threads:2/"
    out = subprocess.run([bench, "--benchmark_filter=" + filt, "--benchmark_format=json"], check=True,
                         capture_output=True, text=True)
    res = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            w = cp.WIDTHS[int(dict(kv.split(":") for kv in b["run_name"].split("/")[1:] if ":" in kv)["w"])]
            res[w] = (b["real_time"], b.get("core_rtt_ns", 0))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/release/bench/dynabert_bench"))
    ap.add_argument("--base-bench", help="a second dynabert_bench to time beside the first")
    ap.add_argument("--precision", default="int8", choices=["fp32", "bf16", "int8"])
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=15, help="ORT calls per cell")
    ap.add_argument("--ort", action="store_true", help="time ONNX Runtime INT8 too")
    ap.add_argument("--near-max-ns", type=float, default=150.0)
    a = ap.parse_args()
    progs = {"dynabert": a.bench}
    if a.base_bench:
        progs["base"] = a.base_bench
    samples = {}  # (program, width) -> [(ms, placement)]
    label = lambda ns: None if not ns else "near" if ns <= a.near_max_ns else "far"
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        if a.ort:
            for w in a.widths:
                f = os.path.join(d, f"cell-{w:g}.onnx")
                subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compare_peers.py"), "--onnx-export",
                                str(w), "1", f], check=True, capture_output=True)
                q = os.path.join(d, f"cell-{w:g}-int8.onnx")
                cp.quantize_onnx_int8(f, q)
                paths[w] = q
        for rnd in range(a.rounds):
            line = [f"round {rnd + 1}:"]
            for name, bench in progs.items():
                for w, (ms, ns) in sorted(dynabert_cells(bench, a.precision, a.widths).items(), reverse=True):
                    samples.setdefault((name, w), []).append((ms, label(ns)))
                    line.append(f"{name} w{w:g} {ms:.2f} ms ({ns:.0f} ns)")
            for w, q in paths.items():
                before = cp.core_rtt(a.bench)
                out = subprocess.run(["node", os.path.join(ROOT, "tools", "ort_bench.js"), q,
                                      json.dumps({"batches": [1], "threads": [2], "reps": a.reps})],
                                     check=True, capture_output=True, text=True)
                after = cp.core_rtt(a.bench)
                ms = json.loads(out.stdout.strip().splitlines()[-1])["results"][0]["ms"]
                pl = label(before) if label(before) == label(after) else None
                samples.setdefault(("ORT", w), []).append((ms, pl))
                line.append(f"ORT w{w:g} {ms:.2f} ms ({before:.0f}/{after:.0f} ns)")
            print("; ".join(line), flush=True)
    med = {}
    print(f"\nmedians, batch 1, two threads, depth 1, {a.precision} (near: round trip <= {a.near_max_ns:g} ns)")
    for (name, w), xs in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0]), reverse=True):
        for pl in ("near", "far"):
            v = [ms for ms, p in xs if p == pl]
            if v:
                med[(name, w, pl)] = statistics.median(v)
                print(f"  {name:8s} width {w:<5g} {pl:4s} {med[(name, w, pl)]:7.2f} ms over {len(v)} rounds")
    for other in [p for p in ("base", "ORT") if any(k[0] == p for k in med)]:
        for w in a.widths:
            for pl in ("near", "far"):
                if (other, w, pl) in med and ("dynabert", w, pl) in med:
                    print(f"  {other} / dynabert, width {w:g}, {pl}: {med[(other, w, pl)] / med[('dynabert', w, pl)]:.2f}")


if __name__ == "__main__":
    main()
