"""`python -m bench <study> [args]`: run one study (`python -m bench` lists them).

Each study is a module of this package with a `main()` that parses its own arguments and writes
bench/results/<study>.json (with the commit and command line that produced it).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).parent
NOT_STUDIES = {"__init__", "__main__", "common", "synthetic"}  # helpers, not studies


def studies() -> dict[str, str]:
    """Every study, with the first line of its docstring."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem in NOT_STUDIES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        found[path.stem] = doc.splitlines()[0] if doc else ""
    return found


def main(argv: list[str]) -> int:
    known = studies()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in known:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown study {argv[0]!r}\n", file=sys.stderr)
        print("usage: python -m bench <study> [args]   (python -m bench <study> --help)\n")
        width = max(len(name) for name in known)
        for name, line in known.items():
            print(f"  {name:<{width}}  {line}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    study = importlib.import_module(f"bench.{argv[0]}")
    sys.argv = [f"bench.{argv[0]}", *argv[1:]]
    study.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
