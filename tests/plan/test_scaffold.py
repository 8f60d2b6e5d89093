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
    assert {"dodo.py", "eif.toml", "recipes/demo-app.toml", "examples/kernel/app/x86_64/bzImage"} <= rel
    assert not any(name.startswith("examples/kernel/x86_64/") for name in rel)  # only the recipe's kernels
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
    shipped = subprocess.run(  # `eifbuild qemu build`'s script is package data
        [venv / "bin" / "python", "-c", "from eifbuild.runtime import qemubuild; print(qemubuild.SCRIPT.is_file())"],
        cwd=app,
        env=offline,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shipped.stdout == "True\n"
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
    assert (app / "recipes" / "demo-app.toml").read_bytes() == (REPO / "recipes" / "demo-app.toml").read_bytes()


@pytest.mark.parametrize(
    ("archs", "bootstrap", "expected"),
    [
        (["amd64"], "demo", '["x86_64"]'),
        (["arm64"], "demo", '["aarch64"]'),
        (["amd64", "arm64"], "demo", '["x86_64", "aarch64"]'),
        (["amd64", "arm64"], "aws", '["x86_64"]'),
        (["arm64"], "aws", '["aarch64"]'),
    ],
)
def test_init_writes_the_arches_the_image_has(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    archs: list[str],
    bootstrap: str,
    expected: str,
) -> None:
    """Issue #27: `init --oci <an amd64-only image>` wrote both arches, and the lock then failed."""
    from oci_helpers import sample_image, write_layout  # noqa: PLC0415

    write_layout(tmp_path / "image", [sample_image(a) for a in archs], tag="v1", as_index=len(archs) > 1)
    app = tmp_path / "app"
    assert main(["init", str(app), "--bootstrap", bootstrap, "--oci", str(tmp_path / "image") + ":v1"]) == 0
    assert f"arch = {expected}" in (app / "eif.toml").read_text()
    lock_first = bootstrap == "aws" and "aarch64" in expected
    wanted = f"next: cd {app} && {'eifbuild lock --trust-on-first-use && ' if lock_first else ''}doit eif"
    assert capsys.readouterr().out.splitlines()[-1] == wanted


def test_init_with_an_image_of_no_enclave_arch_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from oci_helpers import sample_image, write_layout  # noqa: PLC0415

    write_layout(tmp_path / "image", [sample_image("s390x")], tag="v1")
    assert main(["init", str(tmp_path / "app"), "--oci", str(tmp_path / "image") + ":v1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: image ")
    assert "has no linux/amd64 or linux/arm64 image" in err
    assert not (tmp_path / "app").exists()


def test_init_with_a_registry_tag_says_lock_comes_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tag must be locked before `doit eif`: init says so (here the registry cannot be reached, so
    the image's platforms cannot be read: both arches, and a warning that says to check them)."""
    app = tmp_path / "app"
    assert main(["init", str(app), "--oci", "127.0.0.1:9/team/app:v1"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"next: cd {app} && eifbuild lock --trust-on-first-use && doit eif"
    assert "cannot read the image's platforms" in err
    assert 'arch = ["x86_64", "aarch64"]' in (app / "eif.toml").read_text()


def test_init_keeps_the_modes_of_a_rootfs_made_by_a_tool(tmp_path: Path) -> None:
    """Issue #27: a debootstrap'd rootfs (not in git) gets modes = "preserve"; one in git keeps the default."""
    (tmp_path / "made" / "rootfs" / "etc").mkdir(parents=True)
    init_project(tmp_path / "made", bootstrap="demo", app=ScaffoldApp(rootfs="rootfs", cmd=("/bin/app",)))
    made = load_project(tmp_path / "made" / "eif.toml")
    assert made.app.modes == "preserve"

    tracked = tmp_path / "tracked"
    (tracked / "rootfs" / "bin").mkdir(parents=True)
    (tracked / "rootfs" / "bin" / "app").write_text("#!/bin/sh\n")
    subprocess.run(["git", "-C", str(tracked), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(tracked), "add", "rootfs"], check=True)
    init_project(tracked, bootstrap="demo", app=ScaffoldApp(rootfs="rootfs", cmd=("/bin/app",)))
    assert load_project(tracked / "eif.toml").app.modes == "normalize"
    assert '# modes = "preserve"' in (tracked / "eif.toml").read_text()
