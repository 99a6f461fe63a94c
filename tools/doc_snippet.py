#!/usr/bin/python3
"""Extracts the C++ excerpt of a docs page that follows the marker line
`<!-- compiled by tests/docs/NAME.hpp -->` into a compilable file: the excerpt's #include and
`using` lines at file scope, the rest as the body of `snippet(SNIPPET_ARGS)`, then the harness's
SNIPPET_MAIN (which sets up the variables the excerpt uses and runs it). Used by tests/CMakeLists.txt.

    /usr/bin/python3 tools/doc_snippet.py docs/architecture.md tests/docs/architecture_blocks.hpp OUT.cpp
"""
import os
import re
import sys


def main():
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
