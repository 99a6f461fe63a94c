#!/usr/bin/python3
"""Same-run comparison of two builds of dynabert's benchmarks (a base commit against the working
tree), in alternating rounds so that both meet the same spells of load on a shared machine.

    /usr/bin/python3 tools/compare_builds.py --base ce606c1 [--filter 'BM_BertBase'] [--rounds 3]
    /usr/bin/python3 tools/compare_builds.py --base-bench /tmp/old_bench --bench build/release/bench/dynabert_bench

Without --base-bench, the base commit is checked out into a temporary git worktree and its
dynabert_bench is built there (Release, -O3 -march=native, the same flags as the project's
release preset). Prints, per benchmark, the median over rounds of each round's median (Google
Benchmark repetitions) for both builds, the ratio new / base, and how many rounds the new build
was at least as fast. --markdown writes the table as Markdown.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_base(commit, jobs):
    tmp = tempfile.mkdtemp(prefix="dynabert_base_")
    src = os.path.join(tmp, "src")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", src, commit], check=True, capture_output=True)
    try:
        build = os.path.join(tmp, "build")
        subprocess.run(["cmake", "-S", src, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DCMAKE_CXX_FLAGS_RELEASE=-O3 -DNDEBUG", "-DDYNABERT_BUILD_TESTS=OFF",
                        "-DDYNABERT_BUILD_EXAMPLES=OFF"], check=True, capture_output=True)
        subprocess.run(["cmake", "--build", build, "--target", "dynabert_bench", "-j", str(jobs)], check=True,
                       capture_output=True)
        out = os.path.join(tmp, "dynabert_bench_base")
        os.replace(os.path.join(build, "bench", "dynabert_bench"), out)
        return out
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", src], capture_output=True)


def run(bench, flt, reps):
    out = subprocess.run([bench, f"--benchmark_filter={flt}", f"--benchmark_repetitions={reps}",
                          "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True)
    res = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            # builds before the low-precision paths named the FP32 grid BM_BertBase/batch:...
            res[b["run_name"].replace("/precision:fp32", "")] = b["real_time"]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", help="commit to build the base benchmark from")
    ap.add_argument("--base-bench", help="an already built base dynabert_bench")
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/release/bench/dynabert_bench"))
    ap.add_argument("--filter", default="BM_BertBase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--interleave", action="store_true", help="alternate the two builds benchmark by benchmark")
    ap.add_argument("--names", nargs="+", help="with --interleave: these benchmark names only")
    a = ap.parse_args()
    if not a.base_bench and not a.base:
        sys.exit("give --base COMMIT or --base-bench FILE")
    base = a.base_bench or build_base(a.base, os.cpu_count() or 2)
    rounds = {"base": [{} for _ in range(a.rounds)], "new": [{} for _ in range(a.rounds)]}
    if a.interleave:  # benchmark by benchmark: base, new, base, new, ... (cancels slow drifts of load)
        listed = subprocess.run([a.bench, "--benchmark_list_tests", f"--benchmark_filter={a.filter}"], check=True,
                                capture_output=True, text=True).stdout.split()
        names0 = listed if a.names is None else a.names
        for i, n in enumerate(names0):
            exact = "^" + re.escape(n.split("/min_time")[0].split("/repeats")[0]) + "(/|$)"
            for r in range(a.rounds):
                for name, exe in (("base", base), ("new", a.bench)):
                    rounds[name][r].update(run(exe, exact, a.reps))
            print(f"{i + 1}/{len(names0)} {n}", file=sys.stderr)
    else:
        for r in range(a.rounds):
            for name, exe in (("base", base), ("new", a.bench)):
                rounds[name][r] = run(exe, a.filter, a.reps)
                print(f"round {r + 1}/{a.rounds}: {name} done", file=sys.stderr)
    names = [n for n in rounds["new"][0] if all(n in x for x in rounds["base"] + rounds["new"])]
    rows, ratios = [], []
    for n in names:
        b = statistics.median(x[n] for x in rounds["base"])
        v = statistics.median(x[n] for x in rounds["new"])
        ahead = sum(1 for rb, rn in zip(rounds["base"], rounds["new"]) if rn[n] <= rb[n])
        ratios.append(v / b)
        rows.append((n, b, v, v / b, ahead))
    if a.markdown:
        print("| benchmark | base | new | new / base | rounds new <= base |")
        print("|---|---:|---:|---:|---:|")
        for n, b, v, r, k in rows:
            print(f"| `{n}` | {b:.2f} | {v:.2f} | {r:.3f} | {k}/{a.rounds} |")
    else:
        for n, b, v, r, k in rows:
            print(f"{n:70s} base {b:10.2f}  new {v:10.2f}  new/base {r:.3f}  ({k}/{a.rounds} rounds new <= base)")
    print(f"geometric mean of new / base over {len(ratios)} benchmarks: "
          f"{statistics.geometric_mean(ratios):.3f}; worst {max(ratios):.3f}; best {min(ratios):.3f}")


if __name__ == "__main__":
    main()
