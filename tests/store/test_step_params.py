"""Typed step parameters: every field is in the key, keys of unchanged kinds did not move, and the
store hands the builder the very parameters the key was computed from."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from eifbuild.eif import BuildTime, parse_build_time
from eifbuild.errors import UsageError
from eifbuild.oci._importer import BlobParams, LayerParams
from eifbuild.plan.eifnode import EifParams
from eifbuild.plan.ramdisks import AppFile, AppRamdiskParams, BootstrapRamdiskParams
from eifbuild.sources.recipe import SourceParams
from eifbuild.store import Step, Store, TypedParams
from eifbuild.store.step import RawParams
from eifbuild.toolchain.kernel import KernelParams
from eifbuild.toolchain.zig import ZigCcParams

D = "sha256:" + "ab" * 32
DIFF = "sha256:" + "cd" * 32
KERNEL_TOOL = {"clang": "clang 16", "ld.lld": "LLD 16"}
ZIG_SOURCES = {"src/init.c": "e8a4c0b5d7c0ad0f7e1b4f84a6ef5e8b4dbd3e0e4c4b2c2a3f0fd7b0e9c4b8d1"}
EIF_INPUTS = {"kernel": "66" * 32, "ramdisk/0": "77" * 32, "ramdisk/1": "88" * 32}
CUSTOM = {"a": 1, "eifbuild": {"inputs": {"kernel": "66" * 32}, "recipes": {}}}

# One value of each kind's parameters and, for every field, another valid value.
SAMPLES: list[tuple[TypedParams, dict[str, Any]]] = [
    (BlobParams(D), {"digest": DIFF}),
    (LayerParams(D, DIFF), {"digest": DIFF, "diff_id": D}),
    (
        SourceParams(tree=False, filename="f.tar.gz", member=None, strip=0, unpack=False),
        {"tree": True, "filename": "g.tar.gz", "member": "bin/sh", "strip": 1, "unpack": True},
    ),
    (
        ZigCcParams("x86_64", ("-Wall",), ("init.c", "x.h"), "init"),
        {"arch": "aarch64", "cflags": ("-Wall", "-DX"), "sources": ("init.c",), "output": "a.out"},
    ),
    (
        KernelParams("x86_64", "tinyconfig", ("drivers/misc/nsm.ko",), (("CONFIG_A", "y"),)),
        {"arch": "aarch64", "base": "file", "modules": (), "options": (("CONFIG_A", "m"),)},
    ),
    (BootstrapRamdiskParams(0, "none"), {"mtime": 1, "compression": "gzip"}),
    (
        AppRamdiskParams(
            mtime=0,
            compression="none",
            cmd=("/app",),
            env=("A=1",),
            modes="normalize",
            files=(AppFile("/etc/x", None, "file"),),
            inject=None,
        ),
        {
            "mtime": 1,
            "compression": "gzip",
            "cmd": ("/app", "-v"),
            "env": ("A=2",),
            "modes": "preserve",
            "files": (AppFile("/etc/x", None, "compiled"),),
            "inject": ("etc/t", "1"),
        },
    ),
    (
        EifParams(
            arch="x86_64",
            cmdline="console=ttyS0",
            name="hello",
            image_version="1.0",
            build_time=BuildTime("2024-01-01T00:00:00+00:00", 1704067200),
            build_tool="eifbuild",
            build_tool_version="0.1.0",
            custom=CUSTOM,
            signed=False,
        ),
        {
            "arch": "aarch64",
            "cmdline": "console=ttyS1",
            "name": "other",
            "image_version": "2.0",
            "build_time": BuildTime("2024-01-01T00:00:00Z", 1704067200),
            "build_tool": "x",
            "build_tool_version": "0.2.0",
            "custom": {"a": 2},
            "signed": True,
        },
    ),
]


def _id(sample: tuple[TypedParams, dict[str, Any]]) -> str:
    return type(sample[0]).__name__


@pytest.mark.parametrize("sample", SAMPLES, ids=_id)
def test_every_field_is_in_the_key(sample: tuple[TypedParams, dict[str, Any]]) -> None:
    params, others = sample
    assert dataclasses.is_dataclass(params)
    names = {f.name for f in dataclasses.fields(params)}
    assert set(others) == names, "give every field another value"
    key = Step(params).key
    for name, value in others.items():
        changed = dataclasses.replace(params, **{name: value})
        assert Step(changed).key != key, f"{type(params).__name__}.{name} is not in the key"


@pytest.mark.parametrize("sample", SAMPLES, ids=_id)
def test_params_are_frozen_and_replay_as_recorded(sample: tuple[TypedParams, dict[str, Any]]) -> None:
    params, _ = sample
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.__setattr__(dataclasses.fields(params)[0].name, None)  # type: ignore[arg-type]
    step = Step(params, {"x": "00" * 32}, {"t": "1"})
    replayed = Step.recorded(step.describe())
    assert isinstance(replayed.params, RawParams)
    assert (replayed.kind, replayed.version, replayed.key) == (params.KIND, params.VERSION, step.key)


# Keys computed by the code before the parameters were typed (the dicts it built by hand): the
# same inputs must keep their keys, or every store and shared cache would be rebuilt.
PINNED = {
    "blob": (Step(BlobParams(D)), "425484055615ce79c14258e8c7f3c32f38b470ed4c88617e6655bb6424e8193c"),
    "layer": (
        Step(LayerParams(D, DIFF)),
        "5a4a420c9d5727499cd1fe8e5848abd481e1a55b22e4fa0f04a979d0d5cffd98",
    ),
    "source file": (
        Step(SourceParams(False, "f.tar.gz", None, 0, False), {"sha256": "11" * 32}),
        "cd2b45ad8d6b6d9a7b0bc5b2fac75b4a49be104f34808a9b91f7de824bc04421",
    ),
    "source member": (
        Step(SourceParams(False, "busybox", "bin/busybox", 1, False), {"sha256": "22" * 32}),
        "744d862e428d066412373ee7a797b06b915389bbdb81de9deb75aa5f3773132a",
    ),
    "kernel x86_64": (
        Step(
            KernelParams(
                "x86_64", "tinyconfig", ("drivers/misc/nsm.ko",), (("CONFIG_B", "y"), ("CONFIG_A", "n"))
            ),
            {"source": "33" * 32},
            KERNEL_TOOL,
        ),
        "380024f34af88c1e7f9a6caeca3675b0131df4632a7163617ebdb388f344127e",
    ),
    "kernel aarch64": (
        Step(KernelParams("aarch64", "defconfig", (), ()), {"source": "33" * 32}, KERNEL_TOOL),
        "f833eb709560c743c494e5b9ddc535a9e61cb6c991327bb6e6bd1168d33ff459",
    ),
    "bootstrap ramdisk": (
        Step(BootstrapRamdiskParams(1700000000, "none"), {"init": "44" * 32, "nsm": "55" * 32}),
        "cbe7eba56fccfd7ebc8da37ce4bce405b2f28e1c0fefbc0cf743786c252d50e0",
    ),
    "bootstrap ramdisk gzip": (
        Step(BootstrapRamdiskParams(0, "gzip"), {"init": "44" * 32}),
        "48642c57397d147daa598d1cc8271bcade737d16ccf735aaa976ed728bba1824",
    ),
    "eif": (
        Step(SAMPLES[-1][0], EIF_INPUTS),
        "1e9b6164146dc1fa25ffcce1ad1dfdf3ee5e72d51555687197f175448d128a75",
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_keys_of_unchanged_kinds_are_what_they_were(name: str) -> None:
    step, key = PINNED[name]
    assert step.key == key


def test_zig_cc_key_is_what_it_was(tmp_path: Path) -> None:
    from eifbuild.toolchain import zig  # noqa: PLC0415

    (tmp_path / "init.c").write_text("int main(void){return 0;}\n")
    (tmp_path / "x.h").write_text("#define X 1\n")
    sources = zig.hash_sources([tmp_path / "init.c", tmp_path / "x.h"])
    step = zig._step(sources, "x86_64", ["-Wall", "-DX=1"], "init")
    if step.tool != {"zig": "0.17.1"}:
        pytest.skip(f"another zig is installed: {step.tool}")
    assert step.key == "310724c6f93f352b6b28b05b9a77cf7dc83f92ab6bf576fa5f9e00546b826b4c"


def test_the_builder_gets_the_params_the_key_came_from(tmp_path: Path) -> None:
    params = BootstrapRamdiskParams(7, "none")
    seen: list[object] = []

    def build(got: BootstrapRamdiskParams, out: Path) -> None:
        seen.append(got)
        (out / "f").write_bytes(b"x")

    entry = Store(tmp_path / "store").realize(Step(params, {"init": "44" * 32}), build)
    assert seen == [params]
    assert seen[0] is params
    assert entry.record["step"]["params"] == {
        "layout": "bootstrap",
        "mtime": 7,
        "compression": "none",
        "align": 1,
    }


def test_app_ramdisk_files_say_where_they_come_from() -> None:
    """A compiled program defaults to 0755, text to 0644: the same bytes are not the same file."""
    base = SAMPLES[6][0]
    assert isinstance(base, AppRamdiskParams)
    keys = {
        Step(dataclasses.replace(base, files=(AppFile("/etc/x", None, origin),))).key
        for origin in ("file", "text", "compiled")
    }
    assert len(keys) == 3
    assert (base.KIND, base.VERSION, BootstrapRamdiskParams.VERSION) == ("ramdisk", 2, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, BuildTime("1970-01-01T00:00:00+00:00", 0)),
        (3600, BuildTime("1970-01-01T01:00:00+00:00", 3600)),
        ("2001-02-03T04:05:06Z", BuildTime("2001-02-03T04:05:06Z", 981173106)),
        ("2024-01-02T03:04:05+00:00", BuildTime("2024-01-02T03:04:05+00:00", 1704164645)),
        ("1960-01-01T00:00:00+00:00", BuildTime("1960-01-01T00:00:00+00:00", 0)),
    ],
)
def test_parse_build_time_keeps_text_verbatim(value: object, expected: BuildTime) -> None:
    assert parse_build_time(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected an RFC 3339 string or epoch seconds, got a boolean"),
        (-1, "expected non-negative epoch seconds"),
        ("yesterday", "expected an RFC 3339 time like '2024-01-01T00:00:00+00:00', got 'yesterday'"),
        ("2024-01-01T00:00:00", "'2024-01-01T00:00:00' has no UTC offset; add '+00:00'"),
    ],
)
def test_parse_build_time_refuses(value: object, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_build_time(value, where="--build-time")
    assert (caught.value.key, caught.value.reason) == ("--build-time", message)
