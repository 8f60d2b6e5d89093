"""`eifbuild store ls | verify | gc` on a real store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eifbuild.cli import main
from eifbuild.commands.common import default_store
from eifbuild.plan.config import find_project, find_project_dir
from eifbuild.store import Step, Store
from eifbuild.store.step import RawParams


def _entry(store: Store, i: int, data: bytes) -> str:
    def build(_: RawParams, out: Path) -> dict[str, str]:
        (out / "out").write_bytes(data)
        return {"source": f"demo/{i}"}

    return store.realize(Step(RawParams("demo", 1, {"i": i})), build).key


def test_builder_meta_is_kept_in_the_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = _entry(store, 1, b"x")
    entry = store.get(key)
    assert entry is not None
    assert entry.meta == {"source": "demo/1"}
    assert entry.size == 1
    assert entry.created.endswith("+00:00")

    def build(_: RawParams, out: Path) -> None:
        (out / "f").write_bytes(b"")

    plain = store.realize(Step(RawParams("demo", 1, {"i": 2})), build)
    assert plain.meta == {}
    assert "meta" not in plain.record


def test_ls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "s")
    keys = sorted([_entry(store, 1, b"one"), _entry(store, 2, b"second")])
    assert main(["store", "ls", "--cache", str(store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == keys
    assert all(line.split()[1] == "demo" for line in lines)
    assert {line.split()[-1] for line in lines} == {"demo/1", "demo/2"}


def test_verify_finds_a_corrupt_entry_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "s")
    good = _entry(store, 1, b"good")
    bad = _entry(store, 2, b"bad")
    assert main(["store", "verify", "--cache", str(store.root)]) == 0
    assert capsys.readouterr().out == "2 entries checked, 0 corrupt\n"
    target = store.entry_dir(bad) / "out"
    os.chmod(target, 0o600)
    target.write_bytes(b"flipped")
    expected = store.get(bad).digest("out")  # type: ignore[union-attr]
    assert main(["store", "verify", "--cache", str(store.root)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}: out: content changed (expected {expected})",
        "2 entries checked, 1 corrupt",
    ]
    assert main(["store", "verify", "--repair", "--cache", str(store.root)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "2 entries checked, 1 corrupt (removed)"
    assert list(store.keys()) == [good]
    assert main(["store", "verify", "--cache", str(store.root)]) == 0


def test_gc_keeps_roots_and_young_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "s")
    keep = _entry(store, 1, b"kept")
    drop = _entry(store, 2, b"dropped")
    store.write_roots("project", [keep])
    assert main(["store", "gc", "--cache", str(store.root)]) == 0  # both younger than 7 days
    assert capsys.readouterr().out == "removed 0 entries (0 bytes)\n"
    assert main(["store", "gc", "--keep-days", "0", "--dry-run", "--cache", str(store.root)]) == 0
    assert capsys.readouterr().out.splitlines() == [drop, "would remove 1 entries (7 bytes)"]
    assert store.get(drop) is not None
    assert main(["store", "gc", "--keep-days", "0", "--cache", str(store.root)]) == 0
    assert capsys.readouterr().out.splitlines() == [drop, "removed 1 entries (7 bytes)"]
    assert list(store.keys()) == [keep]


def test_default_store_is_next_to_eif_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    (tmp_path / "eif.toml").write_text("")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    assert find_project_dir(tmp_path / "src" / "deep") == tmp_path
    monkeypatch.chdir(tmp_path / "src" / "deep")
    assert default_store().root == tmp_path / "cache"
    assert find_project_dir(tmp_path.parent) == tmp_path.parent


def test_outside_a_project_commands_use_the_users_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #27: `eifbuild oci inspect <layout>` outside any project wrote ./cache into the cwd."""
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    assert find_project(work) is None
    assert default_store().root == tmp_path / "xdg" / "eifbuild" / "store"
    key = default_store().realize(Step(RawParams("demo", 1)), lambda _, out: None).key
    assert main(["store", "ls"]) == 0
    assert key[:12] in capsys.readouterr().out
    assert list(work.iterdir()) == []  # nothing written where the command ran
    monkeypatch.setenv("EIFBUILD_CACHE", str(tmp_path / "explicit"))
    assert default_store().root == tmp_path / "explicit"


class _StoreSeen(Exception):
    def __init__(self, store: Store) -> None:
        self.store = store


def _see_store(*args: object, store: Store | None = None, **kwargs: object) -> None:
    found = store if store is not None else next(a for a in args if isinstance(a, Store))
    raise _StoreSeen(found)


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["compile", "init.c", "--arch", "x86_64", "-o", "init"], "eifbuild.toolchain.zig.compile_to"),
        (["kernel", "r.toml", "--arch", "x86_64"], "eifbuild.plan.kernelrecipe.build_from_recipe"),
        (["boot", "x.eif"], "eifbuild.runtime.boot.boot_eif"),
    ],
)
def test_every_command_uses_the_store_of_the_project_around_the_cwd(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    target: str,
) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    (tmp_path / "eif.toml").write_text("")
    (tmp_path / "src").mkdir()
    key = Store(tmp_path / "cache").realize(Step(RawParams("demo", 1)), lambda _, out: None).key
    monkeypatch.chdir(tmp_path / "src")
    monkeypatch.setattr(target, _see_store)
    with pytest.raises(_StoreSeen) as seen:
        main(command)
    assert seen.value.store.root == tmp_path / "cache"
    assert main(["store", "ls"]) == 0  # the store commands find the same store
    assert capsys.readouterr().out.startswith(key)


def test_verify_notices_a_changed_executable_bit(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = _entry(store, 1, b"#!/bin/sh\n")
    os.chmod(store.entry_dir(key) / "out", 0o500)
    assert [(p.key, p.message) for p in store.verify()] == [(key, "out: executable bit changed")]
