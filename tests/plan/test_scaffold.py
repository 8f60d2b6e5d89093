"""`eifbuild init`: a new app repo from the shipped recipes; end to end from an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eifbuild.cli import main
from eifbuild.errors import FileAccessError, UsageError
from eifbuild.plan import ScaffoldApp, init_project, load_project

REPO = Path(__file__).resolve().parents[2]
DEMO_APP = ScaffoldApp(rootfs="rootfs", cmd=("/bin/app",))


def test_demo_project_copies_the_repos_own_recipes_and_kernels(tmp_path: Path) -> None:
    written = init_project(tmp_path, bootstrap="demo", app=DEMO_APP, name="hello")
    rel = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"dodo.py", "eif.toml", "recipes/demo.toml", "examples/kernel/x86_64/bzImage"} <= rel
    assert not any(name.startswith("examples/kernel/app/") for name in rel)  # only the recipe's kernels
    for name in rel - {"dodo.py", "eif.toml"}:
        assert (tmp_path / name).read_bytes() == (REPO / name).read_bytes(), name
    assert (tmp_path / "dodo.py").read_text().splitlines()[1] == "from eifbuild.tasks import *  # noqa: F403"
    project = load_project(tmp_path / "eif.toml")
    assert project.name == "hello"
    assert project.arches == ("x86_64", "aarch64")


def test_aws_project_with_an_oci_image(tmp_path: Path) -> None:
    ref = "registry.example/app@sha256:" + "a" * 64
    init_project(tmp_path, bootstrap="aws", app=ScaffoldApp(oci=ref))
    assert (tmp_path / "recipes" / "aws-nitro-cli-1.5.0.toml").read_bytes() == (
        REPO / "recipes" / "aws-nitro-cli-1.5.0.toml"
    ).read_bytes()
    assert not (tmp_path / "examples").exists()
    text = (tmp_path / "eif.toml").read_text()
    assert f'oci = "{ref}"' in text
    assert load_project(tmp_path / "eif.toml").name == tmp_path.name


def test_an_existing_file_is_one_error_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "eif.toml").write_text("mine\n")
    with pytest.raises(FileAccessError) as err:
        init_project(tmp_path, bootstrap="demo", app=DEMO_APP)
    assert str(err.value) == f"{tmp_path / 'eif.toml'}: already exists; eifbuild init never overwrites a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eif.toml"]
    assert (tmp_path / "eif.toml").read_text() == "mine\n"


def test_a_rootfs_needs_a_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError):
        init_project(tmp_path, bootstrap="demo", app=ScaffoldApp(rootfs="rootfs"))
    assert main(["init", str(tmp_path), "--rootfs", "rootfs"]) == 2
    assert capsys.readouterr().err == (
        "error: key '--cmd': a rootfs directory needs the command to run: add --cmd /path/in/rootfs\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_init_then_doit_eif_from_an_installed_wheel_offline(tmp_path: Path) -> None:
    """Build a wheel, install it into a fresh venv, and in an empty directory run the README's
    `eifbuild init --bootstrap demo --rootfs rootfs --cmd /bin/app && doit eif` with no network."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "EIFBUILD_CACHE", "VIRTUAL_ENV"}}
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
        env=env,
        check=True,
        timeout=600,
    )
    [wheel] = wheels.glob("eifbuild-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=env, check=True, timeout=600)
    subprocess.run([venv / "bin" / "pip", "install", "-q", str(wheel)], env=env, check=True, timeout=900)

    app = tmp_path / "app"
    (app / "rootfs" / "bin").mkdir(parents=True)
    (app / "rootfs" / "bin" / "app").write_text("#!/bin/sh\necho app\n")
    offline = {**env, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    offline["EIFBUILD_SOURCES_DIR"] = str(tmp_path / "empty-download-cache")
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import eifbuild; print(eifbuild.__file__)"],
        cwd=app,
        env=offline,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout
    init = subprocess.run(  # noqa: S602 - the README's command line, as a user types it
        "eifbuild init --bootstrap demo --rootfs rootfs --cmd /bin/app && doit eif",
        shell=True,
        cwd=app,
        env={**offline, "PATH": f"{venv / 'bin'}:{offline['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    for arch in ("x86_64", "aarch64"):
        assert (app / "build" / f"app-{arch}.eif").stat().st_size > 1_000_000
    assert (app / "recipes" / "demo.toml").read_bytes() == (REPO / "recipes" / "demo.toml").read_bytes()
