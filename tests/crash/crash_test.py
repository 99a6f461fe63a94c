#!/usr/bin/env python3
"""Crash consistency of Trainer::save_checkpoint, by fault injection (docs/hardening.md).

    crash_test.py DRIVER [--jobs N] [--keep]

DRIVER is tests/crash/crash_driver. For each scenario (the first save into an empty folder, the
next save after more steps, a save again at the same step as the checkpoint `latest` names), the
save is traced once with strace to list every file-system call it makes (open, write, fsync,
rename, unlink, mkdir, rmdir, ...). Then, for every one of those calls, a fresh copy of the
folder is saved into again under `strace -e inject=<call>:signal=KILL:when=<n>`, which kills the
process as it enters exactly that call. After each kill:
  - loading the folder must use a published checkpoint (step-N or step-N.v, never a step-N.tmp
    folder a killed save left), and give the old state or the new one, bit for bit (step, a hash of the
    parameters, and a hash of the parameters one training step later, which depends on the
    optimizer moments, its step count, the dropout generator and the data position), or no
    checkpoint at all where there was none before;
  - running again (resume and save) must succeed, leave one checkpoint folder, `latest` naming it,
    and no orphan (*.tmp, *.tmp.<pid>), and give the state an uninterrupted run gives.
The traced run is also checked for durability order, which a kill cannot show (a power cut can):
every file or folder is fsynced before it is renamed into place, and the folder of a rename is
fsynced before the next rename or removal.
Exit status 0 when every kill point passes, 1 on any failure, 77 (skipped) when strace cannot be
installed or ptrace is not permitted here.
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# every call that changes the file system or its durability (and opens, which create files)
SYSCALLS = ["open", "openat", "creat", "write", "writev", "pwrite64", "ftruncate", "fsync", "fdatasync",
            "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir"]
SKIP = 77


def ensure_strace():
    if shutil.which("strace"):
        return True
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "strace"]
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            return False
        cmd = ["sudo", "-n"] + cmd  # never a password prompt in the middle of ctest
    print("crash_test: installing strace through apt", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env).returncode != 0:  # a stale package index: refresh it once
        subprocess.run(cmd[:-5] + ["update", "-q"], env=env)
        subprocess.run(cmd, env=env)
    return shutil.which("strace") is not None


def run(args, check=True):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}\n{p.stderr}")
    return p


class Failure(Exception):
    pass


class Test:
    def __init__(self, driver, root):
        self.driver = driver
        self.root = root
        self.count = 0

    def fingerprint(self, folder, what="fingerprint"):
        """The loaded state (first line); only a published checkpoint may be loaded (second line)."""
        lines = run([self.driver, "fingerprint", folder]).stdout.strip().splitlines()
        if len(lines) > 1 and not re.fullmatch(r"from step-\d+(\.\d+)?", lines[1]):
            raise Failure(f"{what}: loaded '{lines[1][5:]}', which is not a published checkpoint (folder kept: {folder})")
        return lines[0]

    def copy(self, src, name):
        dst = os.path.join(self.root, name)
        shutil.rmtree(dst, ignore_errors=True)
        if src is None:
            os.makedirs(dst)
        else:
            shutil.copytree(src, dst, symlinks=True)
        return dst

    def trace(self, base, steps, tag, tag_dir):
        """The save's calls as (syscall, n-th of that syscall in the process), and the durability check."""
        work = self.copy(base, f"trace-{tag_dir}")
        log = os.path.join(self.root, f"trace-{tag_dir}.log")
        run(["strace", "-f", "-y", "-s", "4096", "-o", log, "-e", "trace=" + ",".join("?" + c for c in SYSCALLS + ["access"]),
             self.driver, "run", work, str(steps)])
        lines = open(log, encoding="utf-8", errors="replace").read().splitlines()
        line_re = re.compile(r"^(\d+) +(?:<\.\.\. )?([a-z0-9_]+)[( ]")
        main_pid = None
        counts, points, events = {}, [], []
        inside = False
        for line in lines:
            m = line_re.match(line)
            if not m:
                continue
            pid, name = m.group(1), m.group(2)
            if "resumed>" in line:
                continue  # the second half of an interrupted call, already counted
            main_pid = main_pid or pid
            if name == "access":
                if work + "/.save-begins" in line:
                    inside = True
                elif work + "/.save-ends" in line:
                    inside = False
                continue
            if name not in SYSCALLS:
                continue
            if pid != main_pid:
                raise Failure(f"{tag}: another thread or process ({pid}) makes file-system calls; the injection "
                              f"counts per thread would not match: {line}")
            counts[name] = counts.get(name, 0) + 1
            if inside:
                points.append((name, counts[name]))
                events.append(line)
        if not points:
            raise Failure(f"{tag}: no file-system call between the markers (see {log})")
        self.durability(events, tag)
        return points

    @staticmethod
    def durability(events, tag):
        synced = set()
        need_dir_sync = None  # (folder, rename line) awaiting an fsync of the folder
        fd_path = re.compile(r"^\d+ +f(?:data)?sync\(\d+<(.*)>\)")
        for line in events:
            m = fd_path.match(line)
            if m:
                path = os.path.normpath(m.group(1))
                synced.add(path)
                if need_dir_sync and path == need_dir_sync[0]:
                    need_dir_sync = None
                continue
            name = line.split()[1].split("(")[0]
            if name.startswith("rename") or name in ("unlink", "unlinkat", "rmdir"):
                if need_dir_sync:
                    raise Failure(f"{tag}: '{need_dir_sync[1]}' is not made durable (no fsync of {need_dir_sync[0]}) "
                                  f"before '{line}'")
            if name.startswith("rename"):
                paths = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
                if len(paths) < 2 or not line.rstrip().endswith("= 0"):
                    continue
                src, dst = os.path.normpath(paths[0]), os.path.normpath(paths[1])
                if src not in synced:
                    raise Failure(f"{tag}: {src} is renamed into place without an fsync first: '{line}'")
                need_dir_sync = (os.path.dirname(dst), line)
        if need_dir_sync:
            raise Failure(f"{tag}: '{need_dir_sync[1]}' is not made durable before the save returns")

    def check_clean(self, folder, what):
        names = sorted(os.listdir(folder))
        orphans = [n for n in names if ".tmp" in n or ".old" in n]
        steps = [n for n in names if n.startswith("step-")]
        latest = open(os.path.join(folder, "latest")).read().strip() if "latest" in names else None
        if orphans or len(steps) != 1 or latest != steps[0]:
            raise Failure(f"{what}: after a clean save the folder holds {names} (latest: {latest!r})")

    def scenario(self, tag, base, steps, pool):
        tag_dir = tag.replace(" ", "-")
        old = self.fingerprint(base) if base else "none"
        ref = self.copy(base, f"ref-{tag_dir}")
        run([self.driver, "run", ref, str(steps)])
        new = self.fingerprint(ref)
        self.check_clean(ref, f"{tag}: uninterrupted run")
        after_new = self.copy(ref, f"ref2-{tag_dir}")  # what running again after a finished save gives
        run([self.driver, "run", after_new, str(steps)])
        again = self.fingerprint(after_new)
        points = self.trace(base, steps, tag, tag_dir)

        def one(i, point):
            name, n = point
            work = self.copy(base, f"kill-{tag_dir}-{i}")
            p = run(["strace", "-f", "-o", "/dev/null", "-e", "trace=" + name,
                     "-e", f"inject={name}:signal=KILL:when={n}", self.driver, "run", work, str(steps)], check=False)
            if p.returncode not in (-9, 137):
                raise Failure(f"{tag}: the kill at {name} #{n} did not happen (exit {p.returncode}): "
                              f"the run's calls differ from the traced run's\n{p.stderr[-2000:]}")
            state = self.fingerprint(work, f"{tag}: killed at {name} #{n}")
            if state not in (old, new):
                raise Failure(f"{tag}: killed at {name} #{n}: the folder loads\n  {state}\nneither the old state\n  {old}\n"
                              f"nor the new one\n  {new}\n(folder kept: {work})")
            run([self.driver, "run", work, str(steps)])  # the rerun after the crash
            self.check_clean(work, f"{tag}: rerun after a kill at {name} #{n}")
            expected = new if state == old else again
            if self.fingerprint(work) != expected:
                raise Failure(f"{tag}: the rerun after a kill at {name} #{n} (which left the "
                              f"{'old' if state == old else 'new'} state) does not give the uninterrupted result")
            shutil.rmtree(work)
            return "old" if state == old else "new"

        results = list(pool.map(lambda a: one(*a), enumerate(points)))
        self.count += len(points)
        kinds = {}
        for name, _ in points:
            kinds[name] = kinds.get(name, 0) + 1
        print(f"crash_test: {tag}: {len(points)} kill points ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}): "
              f"{results.count('old')} left the old state, {results.count('new')} the new one; reruns clean", flush=True)
        return ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("driver")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args()
    # in CI a test that cannot run is a failure, not a skip (a green run must have checked something)
    cannot_run = 1 if os.environ.get("CI") else SKIP
    if not ensure_strace():
        print("crash_test: " + ("FAILED" if cannot_run == 1 else "SKIPPED") + ": strace is missing and could not be installed")
        return cannot_run
    if subprocess.run(["strace", "-f", "-o", "/dev/null", "true"]).returncode != 0:
        print("crash_test: " + ("FAILED" if cannot_run == 1 else "SKIPPED") + ": strace cannot trace here (ptrace not permitted)")
        return cannot_run
    driver = os.path.abspath(a.driver)
    root = tempfile.mkdtemp(prefix="dynabert_crash_")
    t0 = time.time()
    ok = False
    try:
        t = Test(driver, root)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            first = t.scenario("first save", None, 3, pool)
            t.scenario("next save", first, 2, pool)
            t.scenario("save again at the same step", first, 0, pool)
        print(f"crash_test: passed: {t.count} kill points in {time.time() - t0:.0f} s")
        ok = True
        return 0
    except Failure as e:
        print(f"crash_test: FAILED: {e}")
        return 1
    finally:
        if ok and not a.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"crash_test: scratch folder kept: {root}")


if __name__ == "__main__":
    sys.exit(main())
