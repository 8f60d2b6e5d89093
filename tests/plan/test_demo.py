"""The repo's own demo (`doit eif` on the root eif.toml) gives the committed sha256s and PCRs.

This is the auditor's promise in one test: the same commit, built on another machine, at another
path, with another store, must produce the same bytes. When a change alters the EIF on purpose
(eifbuild's version is in the metadata, so a release does), update examples/demo-expected.json in
the same commit and say why (tools/update-demo-expected.py rewrites it from a clean build).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = json.loads((ROOT / "examples" / "demo-expected.json").read_text())


def _copy_demo(dest: Path) -> Path:
    for name in ("eif.toml", "dodo.py"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "recipes", dest / "recipes")
    shutil.copytree(ROOT / "examples", dest / "examples")
    return dest


@pytest.mark.slow
def test_the_demo_reproduces_the_committed_measurements(tmp_path: Path) -> None:
    project = _copy_demo(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in {"EIFBUILD_CACHE", "SOURCE_DATE_EPOCH"}}
    result = subprocess.run(
        [sys.executable, "-m", "doit", "eif"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for arch, expected in EXPECTED.items():
        eif = project / "build" / f"hello-{arch}.eif"
        pcrs = json.loads((project / "build" / f"hello-{arch}.pcr.json").read_text())
        assert hashlib.sha256(eif.read_bytes()).hexdigest() == expected["sha256"], arch
        assert {k: v for k, v in pcrs.items() if k.startswith("PCR")} == {
            k: v for k, v in expected.items() if k.startswith("PCR")
        }, arch
