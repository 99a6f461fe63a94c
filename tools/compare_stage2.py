#!/usr/bin/python3
"""The speed of a DynaBERT stage-2 epoch of dynabert_train, a base commit against the working tree:
both built (Release, -O3 -march=native), then run on the same options in alternating order, each
`--runs` times; prints the stage-2 (and stage-1) throughput each run reported at its last step.

    /usr/bin/python3 tools/compare_stage2.py --base ce606c1 [--runs 2] [--task sentiment] [-- extra options]

Both runs use the sentiment data of scripts/fetch-data.sh, --no-ablations and a
fresh output folder each time (so every phase is trained, none is loaded).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(src, build_dir):
    subprocess.run(["cmake", "-S", src, "-B", build_dir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    "-DCMAKE_CXX_FLAGS_RELEASE=-O3 -DNDEBUG", "-DDYNABERT_BUILD_TESTS=OFF",
                    "-DDYNABERT_BUILD_BENCHMARKS=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build_dir, "--target", "dynabert_train", "-j", str(os.cpu_count() or 2)],
                   check=True, capture_output=True)
    return os.path.join(build_dir, "examples", "dynabert_train")


def rates(exe, extra, threads):
    out = tempfile.mkdtemp(prefix="dynabert_stage2_")
    try:
        r = subprocess.run([exe, "--out", out, "--data", os.path.join(ROOT, ".data"), "--no-ablations",
                            "--threads", str(threads), *extra], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{exe} failed:\n{r.stderr[-2000:]}")
        found = {}
        for line in r.stderr.replace("\r", "\n").splitlines():
            m = re.match(r"\s*(stage 1|stage 2)\s+step\s+(\d+)/(\d+)\s.*?([\d.]+) ex/s", line)
            if m and m.group(2) == m.group(3):
                found[m.group(1)] = float(m.group(4))
        return found
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("extra", nargs="*", help="options passed to both dynabert_train runs (after --)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dynabert_base_")
    src = os.path.join(tmp, "src")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", src, a.base], check=True, capture_output=True)
    try:
        exes = {"base": build(src, os.path.join(tmp, "build-base")),
                "new": build(ROOT, os.path.join(tmp, "build-new"))}
        runs = {"base": [], "new": []}
        for i in range(a.runs):
            for name in (("base", "new") if i % 2 == 0 else ("new", "base")):
                runs[name].append(rates(exes[name], a.extra, a.threads))
                print(f"run {i + 1}/{a.runs} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
        print(f"| phase | base ({a.base}) ex/s | new ex/s | new / base |")
        print("|---|---:|---:|---:|")
        for ph in ("stage 1", "stage 2"):
            b = statistics.median(r[ph] for r in runs["base"])
            n = statistics.median(r[ph] for r in runs["new"])
            print(f"| {ph} | {b:.1f} | {n:.1f} | {n / b:.2f}x |")
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", src], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
