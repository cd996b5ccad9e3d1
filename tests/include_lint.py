#!/usr/bin/env python3
"""Checks that every include of a sqloop header names it as "sqloop/<layer>/...".

The installed headers live under include/sqloop/, and a host's include path may hold headers of
its own called io/log.h or db/request.h. An include written "io/log.h" inside the project would
find the host's file; "sqloop/io/log.h" cannot. So no file of the project (libraries, examples,
benchmarks, tests, docs) may include a layer's header by its bare path.

Usage: include_lint.py SOURCE_DIR [--self-test]
"""
import pathlib
import re
import sys

LAYERS = ("alloc", "io", "loop", "db")
BARE = re.compile(r'^\s*#\s*include\s*[<"](%s)/' % "|".join(LAYERS), re.M)
TREES = ("alloc", "io", "loop", "db", "examples", "bench", "tests", "docs")


def bare_includes(text):
    """The line numbers of `text` that include a layer header without the sqloop/ prefix."""
    return [text.count("\n", 0, m.start()) + 1 for m in BARE.finditer(text)]


def self_test():
    assert bare_includes('#include "io/log.h"\n') == [1]
    assert bare_includes('int x;\n#include <db/request.h>\n') == [2]
    assert bare_includes('#include "sqloop/io/log.h"\n#include "absl/status/status.h"\n') == []
    assert bare_includes('#include "tests/sim_util.h"\n#include "examples/http/server.h"\n') == []
    print("include_lint self-test ok")


def main():
    if "--self-test" in sys.argv:
        return self_test()
    root = pathlib.Path(sys.argv[1])
    paths = [root / "README.md"]
    for tree in TREES:
        for suffix in ("*.h", "*.cc", "*.md", "*.in"):
            paths += sorted((root / tree).rglob(suffix))
    failures = [f"{p.relative_to(root)}:{n}" for p in paths for n in bare_includes(p.read_text())]
    for failure in failures:
        print(f"{failure}: include sqloop's headers as \"sqloop/<layer>/...\"", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"include_lint: {len(paths)} files, every sqloop include has the sqloop/ prefix")


if __name__ == "__main__":
    main()
