"""Errors by kind: a file that cannot be read, a bad command-line value or argument, bad data in an
input and a bad build description each raise their own class, and all of them stay one-line
``error: …`` messages with exit code 2 at the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from eifbuild import cli
from eifbuild.eif import PackRequest, load_expected_pcrs, pack
from eifbuild.eif.metadata import make_metadata
from eifbuild.eif.writer import write_eif
from eifbuild.errors import (
    ConfigError,
    EifbuildError,
    FileAccessError,
    InputError,
    LocatedError,
    UsageError,
)
from eifbuild.plan.config import parse_project
from eifbuild.runtime import boot
from eifbuild.sources import Lock, load_recipe

if TYPE_CHECKING:
    from pathlib import Path

Capture = pytest.CaptureFixture[str]


def _ramdisk(tmp_path: Path) -> Path:
    rd = tmp_path / "rd.cpio"
    rd.write_bytes(b"R")
    return rd


def _eif(tmp_path: Path) -> Path:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"K")
    out = tmp_path / "x.eif"
    write_eif(
        out, kernel=kernel, cmdline="c", ramdisks=[_ramdisk(tmp_path)], metadata=make_metadata(kernel=kernel),
        arch="x86_64",
    )  # fmt: skip
    return out


@pytest.mark.parametrize("kind", [ConfigError, UsageError, InputError, FileAccessError])
def test_every_kind_is_a_located_eifbuild_error(kind: type[LocatedError]) -> None:
    err = kind("bad", path="f", line=2, key="k")
    assert isinstance(err, LocatedError)
    assert isinstance(err, EifbuildError)
    assert str(err) == "f, line 2, key 'k': bad"
    kinds = {ConfigError, UsageError, InputError, FileAccessError} - {kind}
    assert not isinstance(err, tuple(kinds))


# -- FileAccessError ----------------------------------------------------------------------------------
def test_a_missing_kernel_for_pack_is_a_file_access_error(tmp_path: Path) -> None:
    kernel = tmp_path / "missing-kernel"
    request = PackRequest(
        output=tmp_path / "x.eif", kernel=kernel, cmdline="c", ramdisks=[_ramdisk(tmp_path)], arch="x86_64"
    )
    with pytest.raises(FileAccessError) as err:
        pack(request)
    assert str(err.value) == f"{kernel}: cannot read kernel file: No such file or directory"
    assert not (tmp_path / "x.eif").exists()


def test_cli_pack_with_a_missing_kernel_exits_2(tmp_path: Path, capsys: Capture) -> None:
    kernel = tmp_path / "missing-kernel"
    rd = _ramdisk(tmp_path)
    out = str(tmp_path / "x.eif")
    argv = ["pack", "--kernel", str(kernel), "--cmdline", "c", "--ramdisk", str(rd), "--output", out]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"error: {kernel}: cannot read kernel file: No such file or directory\n"


def test_cli_fetch_of_a_missing_recipe_exits_2(tmp_path: Path, capsys: Capture) -> None:
    recipe = tmp_path / "nope.toml"
    with pytest.raises(FileAccessError):
        load_recipe(recipe)
    assert cli.main(["fetch", str(recipe), "--cache", str(tmp_path / "store")]) == 2
    assert capsys.readouterr().err == f"error: {recipe}: cannot read recipe: No such file or directory\n"


# -- UsageError ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (boot.BootOptions(accel="hvf"), "key '--accel': accelerator 'hvf': expected one of tcg, kvm"),
        (boot.BootOptions(timeout=0), "key '--timeout': timeout 0: expected a positive number of seconds"),
        (boot.BootOptions(machine="virt"), "key '--machine': machine 'virt' for x86_64: expected one of "),
    ],
)
def test_bad_boot_options_are_usage_errors(tmp_path: Path, options: boot.BootOptions, message: str) -> None:
    with pytest.raises(UsageError) as err:
        boot.boot_eif(_eif(tmp_path), options)
    assert str(err.value).startswith(message)
    assert err.value.key == message.split("'")[1]


def test_cli_bad_arch_is_a_usage_error_and_exits_2(tmp_path: Path, capsys: Capture) -> None:
    out = str(tmp_path / "x.eif")
    argv = ["pack", "--kernel", "k", "--cmdline", "c", "--ramdisk", "r", "--output", out, "--arch", "sparc"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: key '--arch': unknown architecture 'sparc': expected one of x86_64, aarch64\n"
    )


# -- InputError ---------------------------------------------------------------------------------------
def test_bad_pcr_json_for_verify_is_an_input_error(tmp_path: Path, capsys: Capture) -> None:
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text('{"PCR0": 7}')
    with pytest.raises(InputError) as err:
        load_expected_pcrs(pcrs)
    assert str(err.value) == f"{pcrs}, key 'PCR0': expected a hex string"
    assert cli.main(["verify", str(_eif(tmp_path)), "--pcrs", str(pcrs)]) == 2
    assert capsys.readouterr() == ("", f"error: {pcrs}, key 'PCR0': expected a hex string\n")


def test_unreadable_pcr_json_is_a_file_access_error(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match=r"missing.json: cannot read expected PCRs: No such file"):
        load_expected_pcrs(tmp_path / "missing.json")


# -- ConfigError --------------------------------------------------------------------------------------
def test_an_eif_toml_error_is_still_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "eif.toml"
    with pytest.raises(ConfigError) as err:
        parse_project('[eif]\nname = "x"\narch = ["sparc"]\n[bootstrap]\n[app]\ncmd = ["/a"]\n', path)
    assert str(err.value) == (
        f"{path}, key 'eif.arch[0]': unknown architecture 'sparc': expected one of x86_64, aarch64"
    )


def test_an_unknown_arch_in_eif_lock_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "eif.lock"
    path.write_text('version = 1\n[sources.r.n.sparc]\nsha256 = "00"\n')
    with pytest.raises(ConfigError) as err:
        Lock.load(path)
    assert (
        str(err.value)
        == f"{path}, key 'sources.r.n.sparc': unknown architecture 'sparc': expected one of x86_64, aarch64"
    )


def test_cli_fetch_of_a_bad_recipe_exits_2(tmp_path: Path, capsys: Capture) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[recipe]\nname = "bad name"\n[sources]\n')
    assert cli.main(["fetch", str(recipe), "--cache", str(tmp_path / "store")]) == 2
    assert capsys.readouterr().err == (
        f"error: {recipe}, key 'recipe.name': recipe name 'bad name' may use only letters, digits and . _ + -\n"
    )
