"""Rebuild the repo's demo from a clean copy and rewrite examples/demo-expected.json.

Run it only when a change moves the demo's EIFs on purpose (a new kernel, init or eifbuild version),
and say why in the same commit; tests/plan/test_demo.py then checks every later build against the file.

    python3 tools/update-demo-expected.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "examples" / "demo-expected.json"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="eifbuild-demo.") as tmp:
        project = Path(tmp)
        for name in ("eif.toml", "dodo.py"):
            shutil.copy2(ROOT / name, project / name)
        for name in ("recipes", "examples"):
            shutil.copytree(ROOT / name, project / name)
        env = {k: v for k, v in os.environ.items() if k not in {"EIFBUILD_CACHE", "SOURCE_DATE_EPOCH"}}
        subprocess.run([sys.executable, "-m", "doit", "eif"], cwd=project, env=env, check=True)
        expected = {}
        for arch in json.loads(EXPECTED.read_text()):
            eif = project / "build" / f"hello-{arch}.eif"
            pcrs = json.loads((project / "build" / f"hello-{arch}.pcr.json").read_text())
            expected[arch] = {"sha256": hashlib.sha256(eif.read_bytes()).hexdigest()}
            expected[arch].update({k: v for k, v in pcrs.items() if k.startswith("PCR")})
    EXPECTED.write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {EXPECTED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
