"""`doit check` and the inputs from outside the project: a `path` source the checkout lacks is a
finding (exit 1), an input that cannot be fetched means the check cannot run (exit 2)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from source_helpers import LocalServer

DODO = "from eifbuild.tasks import *  # noqa: F403\n"
KERNEL = b"kernel bytes " * 500


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_project(root: Path, kernel_source: str) -> Path:
    write(root / "dodo.py", DODO)
    write(
        root / "eif.toml",
        """\
        [eif]
        name = "hello"
        arch = ["x86_64"]
        recipes = ["recipes/k.toml"]
        cmdline = "console=ttyS0"
        [bootstrap]
        kernel = "k.kernel"
        init = { path = "init.bin" }
        [app]
        files = { "/bin/app" = { text = "#!/bin/sh\\n" } }
        cmd = ["/bin/app"]
        """,
    )
    write(root / "recipes/k.toml", f'[recipe]\nname = "k"\n[sources.kernel]\n{kernel_source}\n')
    (root / "init.bin").write_bytes(b"init" * 100)
    return root


def doit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EIFBUILD_CACHE"}
    return subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=root, capture_output=True, text=True, env=env, check=False
    )


def test_check_fails_when_the_checkout_lacks_a_path_source(tmp_path: Path) -> None:
    # the recipe's path points outside the project: a clone of the repo would not have the file
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "kernel").write_bytes(KERNEL)
    pin = hashlib.sha256(KERNEL).hexdigest()
    project = make_project(tmp_path / "app", f'path = "../../outside/kernel"\nsha256 = "{pin}"')
    built = doit(project)
    assert built.returncode == 0, built.stdout + built.stderr
    check = doit(project, "check")
    out = check.stdout + check.stderr
    assert check.returncode == 1, out
    assert "outside/kernel: no such file or directory (the path of source k/kernel)" in out
    assert "reproducible: every EIF" not in out


def test_check_that_cannot_fetch_an_input_exits_2(tmp_path: Path, server: LocalServer) -> None:
    url = server.serve("/kernel", KERNEL)
    project = make_project(
        tmp_path / "app", f'url = "{url}"\nsha256 = "{hashlib.sha256(KERNEL).hexdigest()}"'
    )
    built = doit(project)
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.rmtree(os.environ["EIFBUILD_SOURCES_DIR"])  # the shared download cache is gone ...
    server.routes.clear()  # ... and so is the server's file
    check = doit(project, "check")
    out = check.stdout + check.stderr
    assert check.returncode == 2, out
    assert f"the check cannot run: {url}: HTTP 404" in out
    assert "NOT reproducible" not in out
