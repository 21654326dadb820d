"""The README's results are the files the recipes and benchmarks wrote (no hand-typed figures): every
include block equals its file, every results file under docs/ is included, and each says where it came from."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _sync():
    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "scripts" / "sync_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_readme_results_block_equals_its_file():
    sync = _sync()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = sync.blocks(readme)
    assert blocks, "the README includes no generated results"
    for path, body in blocks:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert body == text + ("" if text.endswith("\n") else "\n"), f"{path} differs from its README block: run `make readme`"


def test_every_generated_results_file_is_included_and_says_where_it_came_from():
    included = {p for p, _ in _sync().blocks((ROOT / "README.md").read_text(encoding="utf-8"))}
    generated = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "results").rglob("*.md"))
    assert generated and set(generated) <= included, set(generated) - included
    for path in generated:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert "Provenance" in text and "commit" in text, f"{path} does not say which commit and machine made it"


RESULT_WORDS = ("WER", "CER", "accuracy", "R@", "s/clip", "ms/clip", "peak MiB", "ΔWER", "p-value", "seconds")


def test_no_results_table_is_typed_outside_an_include_block():
    """A markdown table whose header names a measured quantity (WER, accuracy, recall, time, memory) lives
    only inside an include block: typed results are what went stale before."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    outside = re.sub(r"<!-- include: [^ ]+ -->\n.*?<!-- end include -->", "", readme, flags=re.S)
    lines = outside.splitlines()
    typed = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            if any(word in line for word in RESULT_WORDS):
                typed.append(line)
    assert not typed, f"results tables typed into the README (generate them under docs/results): {typed}"
