"""The fuzz suite of issue #23 (targets in tests/hostile_fuzz.py): each target runs in a child process
under RLIMIT_AS, RLIMIT_FSIZE and a timeout, and may only succeed or raise one of eifbuild's own
one-line errors. A short run by default; the long run is marked slow (CI runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_fuzz import TARGETS
from hostile_helpers import child, tree_files


def _run(tmp_path: Path, name: str, examples: int, timeout: float) -> None:
    work = tmp_path / "work"
    work.mkdir()
    before = tree_files(tmp_path)
    result = child(f"import hostile_fuzz; hostile_fuzz.run({examples}, [{name!r}])", work, timeout=timeout)
    assert result.code == 0, result.err[-4000:]
    assert f"{name}: {examples} examples" in result.err
    # nothing written outside the case's directory (temporary files live in the system's tmp and are gone)
    assert {p for p in tree_files(tmp_path) if not p.is_relative_to(work)} == before - {work}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_fast(tmp_path: Path, name: str) -> None:
    _run(tmp_path, name, 40, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_long(tmp_path: Path, name: str) -> None:
    _run(tmp_path, name, 3000, timeout=3600)
