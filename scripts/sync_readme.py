#!/usr/bin/env python3
"""Copy generated result files into the README (``make readme``); ``--check`` only reports drift.

The README holds no hand-typed results: each results table sits between

    <!-- include: docs/<path>.md -->
    ...the file's text, verbatim...
    <!-- end include -->

and the file is what a recipe or benchmark wrote (with its provenance). ``tests/unit/test_docs.py``
holds the README equal to the files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def expected(readme: str) -> str:
    """The README with every block whose file exists refilled (blocks of missing files left as they are)."""
    def fill(m: re.Match) -> str:
        if not (ROOT / m.group("path")).is_file():
            return m.group(0)
        text = (ROOT / m.group("path")).read_text(encoding="utf-8")
        return m.group(1) + text + ("" if text.endswith("\n") else "\n") + m.group(4)

    return BLOCK.sub(fill, readme)


def blocks(readme: str) -> list[tuple[str, str]]:
    """(path, text between the markers) of every include block."""
    return [(m.group("path"), m.group("body")) for m in BLOCK.finditer(readme)]


def main() -> int:
    path = ROOT / "README.md"
    readme = path.read_text(encoding="utf-8")
    missing = [p for p, _ in blocks(readme) if not (ROOT / p).is_file()]
    new = expected(readme)
    if "--check" in sys.argv[1:]:
        stale = [p for (p, body), (_, want) in zip(blocks(readme), blocks(new)) if body != want]
        for p in stale:
            print(f"README.md: the block of {p} differs from the file (run `make readme`)")
        for p in missing:
            print(f"README.md: the block of {p} has no file (run what writes it, then `make readme`)")
        return 1 if stale or missing else 0
    if new != readme:
        path.write_text(new, encoding="utf-8")
        print(f"README.md: {len(blocks(new)) - len(missing)} include block(s) refreshed")
    if missing:
        print(f"README.md includes {', '.join(missing)}, which does not exist: run the recipe or benchmark that "
              "writes it (the README's text next to the block names it), then `make readme`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
