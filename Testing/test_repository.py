"""Habits of the repository itself: the license file matches the package metadata, and every reference
to the design document points at a section that exists in the repository's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"
# Where code and build files cite the design document.
SOURCES = ("shmn", "SHMNSegmenter", "SHMNTraining", "Testing", "benchmarks")


def _cited_files() -> list[Path]:
    files = [p for folder in SOURCES for p in (ROOT / folder).rglob("*.py")]
    return [p for p in files + [ROOT / "Makefile", ROOT / ".ci" / "run"] if p.is_file() and p != Path(__file__).resolve()]


def test_license_file_matches_pyproject():
    declared = re.search(r'^license\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert declared and declared.group(1) == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text


def test_design_references_point_at_existing_sections():
    sections = set(re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), re.M))
    assert {"1", "3", "6", "7"} <= sections
    cited, dangling = 0, []
    for path in _cited_files():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        # "DESIGN section N" without the file: points nowhere a newcomer can follow.
        dangling += [f"{where}: bare reference" for _ in re.finditer(r"(?<!docs/)\bDESIGN(\.md)? section", text)]
        for number in re.findall(r"docs/DESIGN\.md section (\d+)", text):
            cited += 1
            if number not in sections:
                dangling.append(f"{where}: section {number} does not exist")
    assert cited and not dangling, dangling
