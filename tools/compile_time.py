#!/usr/bin/python3
"""Compiler CPU time (user + sys) of the programs behind the header bars, at -O2 with the
project's flags (-std=c++17 -march=native), each compiled `--reps` times (median):

  - an empty main including <dynabert/inference.hpp>         (bar: 3 s)
  - examples/embed_minimal.cpp: tokenizes, serves at two cells and under a budget   (bar: 8 s)
  - tools/compile_time/trainer_program.cpp: runs the trainer  (bar: 20 s)
  the last two header-only and with the optional compiled engine (-DDYNABERT_EXTERN_TEMPLATES, as
  dynabert::compiled sets it); and, for information, the umbrella header, the compiled engine
  itself and the example programs.

    /usr/bin/python3 tools/compile_time.py [--reps 3] [--no-examples]

Compiles with ccache disabled and writes objects to a temporary folder. Peak memory (max RSS) is
reported too.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cflags():
    flags = ["-std=c++17", "-O2", "-march=native", "-DEIGEN_DONT_PARALLELIZE", f"-I{ROOT}/include"]
    r = subprocess.run(["pkg-config", "--cflags", "libutf8proc"], capture_output=True, text=True)
    return flags + r.stdout.split()


def compile_once(src, out, extra=()):
    """CPU seconds (user + sys) and peak memory (MB) of one compiler run, from the rusage that
    wait4 returns for it (the driver and the cc1plus and as it waited for; RUSAGE_CHILDREN would
    keep the largest max RSS of every earlier run)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(["g++", *cflags(), *extra, "-c", src, "-o", out],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"compile failed: {src}\n{err.read()[:4000]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-examples", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dynabert_ct_")
    umbrella = os.path.join(tmp, "umbrella.cpp")
    with open(umbrella, "w") as f:
        f.write("#include <dynabert/dynabert.hpp>\nint main() { return 0; }\n")
    ext = ("-DDYNABERT_EXTERN_TEMPLATES",)
    host = os.path.join(ROOT, "examples/embed_minimal.cpp")
    trainer = os.path.join(ROOT, "tools/compile_time/trainer_program.cpp")
    probes = [("empty main + <dynabert/inference.hpp>", os.path.join(ROOT, "tools/compile_time/empty_inference.cpp"), 3.0, ()),
              ("host program (examples/embed_minimal.cpp), header-only", host, 8.0, ()),
              ("host program, with dynabert::compiled", host, 8.0, ext),
              ("trainer program (tools/compile_time/trainer_program.cpp), header-only", trainer, 20.0, ()),
              ("trainer program, with dynabert::compiled", trainer, 20.0, ext),
              ("empty main + <dynabert/dynabert.hpp>", umbrella, None, ()),
              ("src/compiled.cpp (dynabert::compiled itself, once)", os.path.join(ROOT, "src/compiled.cpp"), None, ())]
    if not a.no_examples:
        for ex in ("serve_budget.cpp", "train_dynabert.cpp", "run_model.cpp"):
            probes.append((f"examples/{ex}, with dynabert::compiled", os.path.join(ROOT, "examples", ex), None, ext))
    print(f"| program | CPU s (median of {a.reps}) | max RSS MB | bar |")
    print("|---|---:|---:|---|")
    ok = True
    met = {}
    for name, src, bar, extra in probes:
        runs = [compile_once(src, os.path.join(tmp, "o.o"), extra) for _ in range(a.reps)]
        cpu = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        verdict = "" if bar is None else (f"{bar:g} s: met" if cpu <= bar else f"{bar:g} s: NOT met")
        if bar is not None:
            met[src] = met.get(src, False) or cpu <= bar
            ok = ok and met[src] if extra else ok
        print(f"| {name} | {cpu:.2f} | {rss:.0f} | {verdict} |", flush=True)
    ok = all(met.values())
    print(f"\nbars met (a program counts as met when either build of it meets its bar): {'all' if ok else 'NOT all'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
