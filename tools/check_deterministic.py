#!/usr/bin/python3
"""dynabert_train --deterministic gives the same bytes (a ctest): a tiny run on the sentiment data
twice, and once killed in stage 2 and resumed, must write identical results.csv, results.md and
checkpoint files.

    /usr/bin/python3 tools/check_deterministic.py BUILD_DIR/examples/dynabert_train DATA_DIR
"""
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

OPTIONS = ["--layers", "2", "--hidden", "32", "--heads", "4", "--ffn", "64", "--max-len", "24", "--batch", "16",
           "--teacher-epochs", "1", "--stage1-epochs", "1", "--stage2-epochs", "1", "--threads", "2", "--no-ablations",
           "--deterministic", "--checkpoint-every", "20", "--seed", "7"]
FILES = ["results.csv", "results.md", "checkpoint/model.safetensors", "checkpoint/config.json", "checkpoint/vocab.txt"]


def train(exe, data, out):
    r = subprocess.run([exe, "--data", data, "--out", out] + OPTIONS, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAILED: dynabert_train exited {r.returncode}\n{r.stderr[-2000:]}")
    return r.stderr


def killed_in_stage2(exe, data, out):
    """Starts a run and kills it (SIGKILL) once it has written a stage-2 checkpoint; returns whether it did."""
    p = subprocess.Popen([exe, "--data", data, "--out", out] + OPTIONS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = os.path.join(out, "state", "stage2", "latest")
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 600:
        if os.path.exists(latest):
            time.sleep(0.05)
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.02)
    p.wait()
    return False


def main():
    exe, data = sys.argv[1], sys.argv[2]
    if not os.path.exists(os.path.join(data, "sentiment")) or not os.path.exists(os.path.join(data, "vocab")):
        print(f"check_deterministic: {data}/sentiment or {data}/vocab not fetched; skipped")
        return 0
    tmp = tempfile.mkdtemp(prefix="dynabert_det_")
    failed = []
    try:
        a, b, c = (os.path.join(tmp, x) for x in ("a", "b", "c"))
        train(exe, data, a)
        train(exe, data, b)
        if not killed_in_stage2(exe, data, c):
            failed.append("the run to be killed finished before it wrote a stage-2 checkpoint")
        log = train(exe, data, c)  # resumes
        if "resuming" not in log:
            failed.append("the rerun after the kill did not resume")
        for other, what in ((b, "a second run"), (c, "a run killed in stage 2 and resumed")):
            for f in FILES:
                if not filecmp.cmp(os.path.join(a, f), os.path.join(other, f), shallow=False):
                    failed.append(f"{f} differs in {what}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failed:
        print("FAILED", f)
    print(f"{len(FILES) * 2 + 2 - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
