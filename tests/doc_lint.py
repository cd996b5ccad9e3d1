#!/usr/bin/env python3
"""Checks that every state machine's transition table names functions that exist.

A transition table is a comment block that starts with a header line such as

    //   transition        function        invariant in the new state
    //   state   event   next   made by

(the function column may also be called "made by"), followed by one row per transition. Each
name in a row's function column ("OnOpened->ServeQueue", "RunEvent/Finish", "Finish, FailQueue")
must be called or defined in the code (not the comments) of the table's own unit: the files of
its directory whose names start with the table file's stem (db/registry.cc: registry.h and
registry.cc), so a table cannot go on naming a function that was renamed, removed, or lives in
another unit.

Usage: doc_lint.py SOURCE_DIR [--self-test]
"""
import pathlib
import re
import sys

DIRS = ["alloc", "io", "loop", "db", "db/internal", "examples", "examples/http"]
HEADER = re.compile(
    r"^(\s*//\s+)(?:transition|state\s+event\s+next)(\s+)(function|made by)(\s*)(\S|$)")
NAME = re.compile(r"\b([A-Z][A-Za-z0-9_]*)\b")


def tables(text):
    """Yields (line_number, [function names]) for every row of every table in `text`."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        header = HEADER.match(line)
        if not header:
            continue
        start = line.index(header.group(3))
        for j in range(i + 1, len(lines)):
            row = lines[j]
            if not row.strip().startswith("//") or row.strip() in ("//", ""):
                break
            body = row.rstrip()
            if len(body) <= start or body[start - 1] != " ":
                continue  # A continuation line of the previous row's last column.
            # The column runs to the next gap of two or more spaces (a long entry may push the
            # next column right).
            column = re.split(r"\s{2,}", body[start:].strip())[0]
            names = [n for n in NAME.findall(column)]
            if names:
                yield j + 1, names


def code_of(directory, stem):
    """The code (comments stripped) of the .h and .cc files in `directory` named stem*."""
    code = []
    for path in sorted(directory.glob(stem + "*.h")) + sorted(directory.glob(stem + "*.cc")):
        text = path.read_text()
        text = re.sub(r"//[^\n]*", "", text)
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        code.append(text)
    return "\n".join(code)


def lint(root):
    problems = []
    checked = 0
    for name in DIRS:
        directory = root / name
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.h")) + sorted(directory.glob("*.cc")):
            code = code_of(directory, path.stem)
            for line, names in tables(path.read_text()):
                for function in names:
                    checked += 1
                    if not re.search(r"\b" + re.escape(function) + r"\s*\(", code):
                        problems.append(f"{path.relative_to(root)}:{line}: the transition table "
                                        f"names {function}, which {path.stem}* never defines or calls")
    return checked, problems


def self_test():
    sample = (
        "//   transition     function      invariant\n"
        "//   kA -> kB       Open->Pump    something\n"
        "//   kB -> kC       Gone, Close   other\n"
        "//                                continued text\n"
        "//\n")
    rows = list(tables(sample))
    assert rows == [(2, ["Open", "Pump"]), (3, ["Gone", "Close"])], rows
    four_columns = (
        "//   state   event          next    made by\n"
        "//   kA      it arrived     kB      OnRead -> Parse\n"
        "//           or it did not          Retry\n")
    rows = list(tables(four_columns))
    assert rows == [(2, ["OnRead", "Parse"]), (3, ["Retry"])], rows
    # The negative control: a unit whose table names a function it lacks is reported.
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        unit = pathlib.Path(tmp) / "db"
        unit.mkdir()
        (unit / "thing.h").write_text(sample)
        (unit / "thing.cc").write_text("void Open() {}\nvoid Pump() {}\nvoid Close() {}\n")
        checked, problems = lint(pathlib.Path(tmp))
        assert checked == 4 and len(problems) == 1 and "names Gone" in problems[0], problems
    print("doc_lint self-test: a table naming a missing function is caught")
    return 0


def main():
    if "--self-test" in sys.argv:
        return self_test()
    root = pathlib.Path(sys.argv[1])
    checked, problems = lint(root)
    for problem in problems:
        print(problem)
    if checked == 0:
        print("doc_lint: found no transition table at all; is the header pattern still right?")
        return 1
    print(f"doc_lint: {checked} function names in transition tables checked, "
          f"{len(problems)} missing")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
