#!/usr/bin/python3
"""Include arrows of include/dynabert run downward only (a ctest).

Layers, lowest first; a header may include headers of its own folder or of a lower layer, never
of the same layer's other folder or of a higher one:

    0  core/                      no model knowledge
    1  kernels/   io/             free functions on pointers; file formats
    2  layers/    text/           the blocks; the tokenizer and readers
    3  model/                     BERT's composition of the blocks, weights, elastic rules
    4  serve/     train/          sessions and the budget; training
    5  importance/

and the entry headers: inference.hpp must not reach train/, importance/, text/ (nor utf8proc,
iconv or Eigen), text.hpp must not reach kernels/, layers/, model/, train/.

    /usr/bin/python3 tools/check_layering.py
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "include")
RANK = {"core": 0, "kernels": 1, "io": 1, "layers": 2, "text": 2, "model": 3, "serve": 4, "train": 4, "importance": 5}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def includes(path):
    with open(os.path.join(ROOT, path)) as f:
        return INCLUDE.findall(f.read())


def reach(path, seen=None):
    """Every header (dynabert or system) reachable from `path`."""
    seen = set() if seen is None else seen
    for inc in includes(path):
        if inc in seen:
            continue
        seen.add(inc)
        if inc.startswith("dynabert/"):
            reach(inc, seen)
    return seen


def main():
    errors = []
    headers = []
    for d, _, files in os.walk(os.path.join(ROOT, "dynabert")):
        headers += [os.path.relpath(os.path.join(d, f), ROOT) for f in files if f.endswith(".hpp")]
    for h in sorted(headers):
        parts = h.split("/")
        if len(parts) != 3:
            continue  # entry headers
        folder = parts[1]
        if folder not in RANK:
            errors.append(f"{h}: folder '{folder}' has no layer")
            continue
        for inc in includes(h):
            if not inc.startswith("dynabert/"):
                continue
            ip = inc.split("/")
            if len(ip) != 3:
                errors.append(f"{h} includes the entry header {inc}")
                continue
            if ip[1] == folder:
                continue
            if RANK.get(ip[1], 99) >= RANK[folder]:
                errors.append(f"{h} ({folder}, layer {RANK[folder]}) includes {inc} ({ip[1]}, layer {RANK.get(ip[1])})")
    forbidden = {
        "dynabert/inference.hpp": ("dynabert/train/", "dynabert/importance/", "dynabert/text/", "utf8proc.h", "iconv.h", "Eigen/"),
        "dynabert/text.hpp": ("dynabert/kernels/", "dynabert/layers/", "dynabert/model/", "dynabert/train/"),
    }
    for entry, bad in forbidden.items():
        for inc in sorted(reach(entry)):
            if inc.startswith(bad):
                errors.append(f"{entry} reaches {inc}")
    for e in errors:
        print("layering:", e)
    print(f"layering: {len(headers)} headers checked; {0 if errors else 1} passed, {1 if errors else 0} failed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
