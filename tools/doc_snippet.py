#!/usr/bin/python3
"""Extracts the C++ excerpt of a docs page that follows the marker line
`<!-- compiled by tests/docs/NAME.hpp -->` into a compilable file: the excerpt's #include and
`using` lines at file scope, the rest as the body of `snippet(SNIPPET_ARGS)`, then the harness's
SNIPPET_MAIN (which sets up the variables the excerpt uses and runs it). Used by tests/CMakeLists.txt.

    /usr/bin/python3 tools/doc_snippet.py docs/architecture.md tests/docs/architecture_blocks.hpp OUT.cpp
    /usr/bin/python3 tools/doc_snippet.py --check-all     # every C++ excerpt of docs/ and README is marked
"""
import os
import re
import sys


def check_all(root):
    """Every ```cpp excerpt of docs/*.md and README.md is marked for a harness that exists and that
    tests/CMakeLists.txt builds: prints the unmarked ones and fails if there are any."""
    cmake = open(os.path.join(root, "tests", "CMakeLists.txt")).read()
    pages = [os.path.join(root, "README.md")] + sorted(
        os.path.join(root, "docs", f) for f in os.listdir(os.path.join(root, "docs")) if f.endswith(".md"))
    bad, good = [], 0
    for page in pages:
        lines = open(page).read().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "```cpp":
                continue
            m = re.match(r"<!-- compiled by tests/docs/(\w+)\.hpp -->", lines[i - 1].strip()) if i else None
            where = f"{os.path.relpath(page, root)}:{i + 1}"
            if not m:
                bad.append(f"{where}: C++ excerpt not marked for a harness")
            elif not os.path.exists(os.path.join(root, "tests", "docs", m.group(1) + ".hpp")):
                bad.append(f"{where}: harness tests/docs/{m.group(1)}.hpp does not exist")
            elif ":" + m.group(1) not in cmake:
                bad.append(f"{where}: tests/CMakeLists.txt does not build harness {m.group(1)}")
            else:
                good += 1
    for b in bad:
        print(b)
    print(f"doc_snippet --check-all: {good} passed, {len(bad)} failed")
    return 1 if bad else 0


def main():
    if sys.argv[1:2] == ["--check-all"]:
        sys.exit(check_all(sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..")))
    doc, harness, out = sys.argv[1:4]
    name = os.path.basename(harness)
    text = open(doc).read()
    m = re.search(r"<!-- compiled by tests/docs/" + re.escape(name) + r" -->\s*```cpp\n(.*?)```", text, re.S)
    if not m:
        sys.exit(f"{doc}: no excerpt marked for {name}")
    head, body = [], []
    for line in m.group(1).splitlines():
        (head if line.startswith(("#include", "using namespace")) else body).append(line)
    src = [f"// Generated from {os.path.basename(doc)} by tools/doc_snippet.py: do not edit.",
           f'#include "{os.path.abspath(harness)}"', *head, "", "static void snippet(SNIPPET_ARGS) {",
           *("  " + l if l else "" for l in body), "}", "", "SNIPPET_MAIN"]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(src) + "\n")
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
