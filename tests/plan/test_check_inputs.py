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


def test_a_path_source_outside_the_project_needs_the_opt_in_in_the_build_and_the_check(tmp_path: Path) -> None:
    # the recipe's path points outside the project: refused by the build and by the check alike
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "kernel").write_bytes(KERNEL)
    pin = hashlib.sha256(KERNEL).hexdigest()
    project = make_project(tmp_path / "app", f'path = "../../outside/kernel"\nsha256 = "{pin}"')
    refused = "outside/kernel (the path of source k/kernel) is outside the project"
    for args in ((), ("check",)):
        run = doit(project, *args)
        assert run.returncode != 0, run.stdout + run.stderr
        assert refused in run.stdout + run.stderr
        assert "allow_paths_outside = true" in run.stdout + run.stderr
    assert not (project / "build").exists()


def test_with_the_opt_in_the_check_reads_the_same_outside_file_as_the_build(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "kernel").write_bytes(KERNEL)
    pin = hashlib.sha256(KERNEL).hexdigest()
    project = make_project(tmp_path / "app", f'path = "../../outside/kernel"\nsha256 = "{pin}"')
    config = project / "eif.toml"
    config.write_text(config.read_text().replace('name = "hello"', 'name = "hello"\nallow_paths_outside = true'))
    built = doit(project)
    assert built.returncode == 0, built.stdout + built.stderr
    check = doit(project, "check")
    out = check.stdout + check.stderr
    assert check.returncode == 0, out
    assert "reproducible: every EIF" in out


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


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _git_project(tmp_path: Path) -> Path:
    """A git checkout whose rootfs is ignored (made by a tool), with a venv and a new untracked file."""
    pin = hashlib.sha256(KERNEL).hexdigest()
    project = make_project(tmp_path / "app", f'path = "kernel"\nsha256 = "{pin}"')
    (project / "recipes" / "kernel").write_bytes(KERNEL)
    eif = (project / "eif.toml").read_text().replace("[app]\n", '[app]\nrootfs = "rootfs"\n')
    (project / "eif.toml").write_text(eif.replace('cmd = ["/bin/app"]', 'cmd = ["/bin/app"]\n'))
    (project / "rootfs" / "etc").mkdir(parents=True)
    (project / "rootfs" / "etc" / "motd").write_text("made by a tool\n")
    (project / ".gitignore").write_text("/rootfs/\n/.venv/\n/build/\n/cache/\n")
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (project / ".venv" / "lib" / "big").write_bytes(b"\0" * 1_000_000)
    (project / "sub" / "env").mkdir(parents=True)  # a venv that git does not ignore
    (project / "sub" / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "app")
    (project / "notes.txt").write_text("new, not committed yet\n")
    return project


def test_the_check_copies_what_the_build_reads_and_no_venv(tmp_path: Path) -> None:
    """Issue #27: `doit check` copied the project's .venv (879 MB) into its temp dir."""
    from eifbuild.plan import Plan, load_project  # noqa: PLC0415
    from eifbuild.plan.selfcheck import _copy_project  # noqa: PLC0415

    project = _git_project(tmp_path)
    plan = Plan(load_project(project))
    dest = tmp_path / "copy"
    _copy_project(plan, dest, {plan.store.root.absolute(), plan.project.output.absolute()})
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if not p.is_dir())
    assert copied == [
        ".gitignore",
        "dodo.py",
        "eif.toml",
        "init.bin",
        "notes.txt",
        "recipes/k.toml",
        "recipes/kernel",
        "rootfs/etc/motd",  # ignored by git, but the build reads it
    ]


def test_check_passes_in_a_git_checkout_with_an_ignored_rootfs_and_a_venv(tmp_path: Path) -> None:
    project = _git_project(tmp_path)
    built = doit(project)
    assert built.returncode == 0, built.stdout + built.stderr
    check = doit(project, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "reproducible" in check.stdout + check.stderr


def test_the_check_copy_never_writes_through_a_symlink_of_the_project(tmp_path: Path) -> None:
    """#23: a tracked symlink 'shared' → '../outside' and a rootfs below it: the copy holds the link
    (leading where it did) and writes nothing through it (it used to fill ../outside of the copy)."""
    from eifbuild.plan import Plan, load_project  # noqa: PLC0415
    from eifbuild.plan.selfcheck import _copy_project  # noqa: PLC0415

    project = _git_project(tmp_path)
    (tmp_path / "outside" / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "outside" / "rootfs" / "etc" / "motd").write_text("shared\n")
    (project / "shared").symlink_to("../outside")
    eif = (project / "eif.toml").read_text().replace('rootfs = "rootfs"', 'rootfs = "shared/rootfs"')
    eif = eif.replace("[eif]\n", "[eif]\nallow_paths_outside = true\n")  # the rootfs is outside (#23)
    (project / "eif.toml").write_text(eif)
    _git(project, "add", "-A")
    plan = Plan(load_project(project))
    work = tmp_path / "work"
    dest = work / "copy"
    _copy_project(plan, dest, {plan.store.root.absolute(), plan.project.output.absolute()})
    assert os.readlink(dest / "shared") == "../outside"
    assert not os.path.lexists(work / "outside")  # where the copied link leads: nothing written there
