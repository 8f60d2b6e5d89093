from __future__ import annotations

import multiprocessing
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eifbuild.errors import StoreError
from eifbuild.store import Step, Store, canonical_json
from eifbuild.store.local import Substituted
from eifbuild.store.step import RawParams


def _write(name: str, data: bytes) -> Callable[[RawParams, Path], None]:
    def build(_: RawParams, out: Path) -> None:
        (out / name).write_bytes(data)

    return build


def test_key_is_canonical_and_sensitive() -> None:
    a = Step(RawParams("cpio", 1, {"b": 1, "a": [1, 2]}), {"x": "00"})
    b = Step(RawParams("cpio", 1, {"a": [1, 2], "b": 1}), {"x": "00"})
    assert a.key == b.key
    assert len(a.key) == 64
    assert Step(RawParams("cpio", 2, {"b": 1, "a": [1, 2]}), {"x": "00"}).key != a.key
    assert Step(RawParams("cpio", 1, {"b": 1, "a": [1, 2]}), {"x": "01"}).key != a.key
    assert Step(RawParams("cpio", 1, {"b": 1, "a": [1, 2]}), {"x": "00"}, {"zig": "0.17.1"}).key != a.key
    assert canonical_json({"é": 1, "a": None}) == '{"a":null,"é":1}'.encode()


def test_realize_builds_once_and_publishes_readonly(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    calls = []

    def build(_: RawParams, out: Path) -> None:
        calls.append(out)
        (out / "sub").mkdir()
        (out / "sub" / "f").write_bytes(b"hello")
        (out / "link").symlink_to("sub/f")

    step = Step(RawParams("demo", 1, {"n": 1}))
    entry = store.realize(step, build)
    again = store.realize(step, build)
    assert len(calls) == 1
    assert again.record == entry.record
    assert entry.path == tmp_path / "store" / step.key[:2] / step.key
    assert entry.file("sub/f").read_bytes() == b"hello"
    assert entry.outputs["link"] == {"type": "symlink", "target": "sub/f"}
    assert entry.digest("sub/f") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert not stat.S_IMODE(entry.file("sub/f").stat().st_mode) & 0o222
    assert not stat.S_IMODE(entry.path.stat().st_mode) & 0o222
    assert list(store.keys()) == [step.key]
    assert entry.record["step"]["params"] == {"n": 1}
    assert not list((store.root / "tmp").iterdir())


def test_unknown_output_name_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    entry = store.realize(Step(RawParams("demo", 1)), _write("out", b"x"))
    with pytest.raises(StoreError, match=r"has no output 'nope' \(outputs: out\)"):
        entry.file("nope")


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def build(_: RawParams, out: Path) -> None:
        (out / "partial").write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        store.realize(Step(RawParams("demo", 1)), build)
    assert list(store.keys()) == []
    assert not list((tmp_path / "tmp").iterdir())
    assert not list(tmp_path.glob("??"))


def test_directory_without_record_is_garbage_and_rebuilt(tmp_path: Path) -> None:
    store = Store(tmp_path)
    step = Step(RawParams("demo", 1))
    stale = store.entry_dir(step.key)
    stale.mkdir(parents=True)
    (stale / "out").write_bytes(b"stale")
    assert store.get(step.key) is None
    assert list(store.garbage()) == [stale]
    entry = store.realize(step, _write("out", b"fresh"))
    assert entry.file("out").read_bytes() == b"fresh"


def test_downloads_nobody_holds_are_garbage(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.downloads_dir.mkdir()
    part = store.downloads_dir / "oci-blob-sha256-ab.part"
    state = store.downloads_dir / "oci-blob-sha256-ab.part.json"
    other = store.downloads_dir / "oci-blob-sha256-cd"
    for path in (part, state, other):
        path.write_bytes(b"x")
    with store.lock("oci-blob-sha256-ab"):  # being downloaded: left alone
        assert list(store.garbage()) == [other]
        store.gc()
    assert sorted(store.garbage()) == [part, state]
    store.gc()
    assert list(store.downloads_dir.iterdir()) == []


def _concurrent_builder(root: str, marker: str) -> None:
    def build(_: RawParams, out: Path) -> None:
        with open(marker, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)
        (out / "out").write_bytes(b"data")

    Store(root).realize(Step(RawParams("demo", 1)), build)


def test_two_processes_build_a_key_once(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_concurrent_builder, args=(str(tmp_path / "s"), str(marker))) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert marker.read_text() == "built\n"
    assert Store(tmp_path / "s").get(Step(RawParams("demo", 1)).key) is not None


def test_verify_finds_and_repairs_corruption(tmp_path: Path) -> None:
    store = Store(tmp_path)
    good = store.realize(Step(RawParams("demo", 1, {"i": 1})), _write("out", b"good"))
    bad = store.realize(Step(RawParams("demo", 1, {"i": 2})), _write("out", b"bad"))
    target = bad.file("out")
    os.chmod(target, 0o644)
    target.write_bytes(b"tampered")
    problems = store.verify()
    assert [(p.key, p.message) for p in problems] == [
        (bad.key, f"out: content changed (expected {bad.digest('out')})")
    ]
    store.verify(repair=True)
    assert store.get(bad.key) is None
    assert not bad.path.exists()
    assert store.get(good.key) is not None
    assert store.verify() == []


def test_gc_keeps_roots_and_recent_entries(tmp_path: Path) -> None:
    store = Store(tmp_path)
    keep = store.realize(Step(RawParams("demo", 1, {"i": 1})), _write("out", b"1"))
    drop = store.realize(Step(RawParams("demo", 1, {"i": 2})), _write("out", b"2"))
    store.write_roots("project", [keep.key])
    assert store.gc(keep_days=1) == []  # both are younger than a day
    assert store.gc(keep_days=0) == [drop.key]
    assert list(store.keys()) == [keep.key]
    assert not drop.path.exists()


def test_for_project_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    assert Store.for_project(tmp_path).root == tmp_path / "cache"
    monkeypatch.setenv("EIFBUILD_CACHE", str(tmp_path / "elsewhere"))
    assert Store.for_project(tmp_path).root == tmp_path / "elsewhere"


def test_substitute_asks_the_substituter_and_never_builds(tmp_path: Path) -> None:
    asked: list[str] = []

    def substituter(step: Step[Any], out: Path) -> Substituted | None:
        asked.append(step.key)
        if step.params.to_json()["n"] != 1:
            return None
        (out / "f").write_bytes(b"from elsewhere")
        return Substituted({}, "mirror")

    store = Store(tmp_path / "store", substituter=substituter)
    filled, missing = Step(RawParams("demo", 1, {"n": 1})), Step(RawParams("demo", 1, {"n": 2}))
    entry = store.substitute(filled)
    assert entry is not None
    assert entry.record["substituted"] == "mirror"
    assert store.substitute(filled) == entry  # in the store now: not asked again
    assert store.substitute(missing) is None
    assert asked == [filled.key, missing.key]
    # the caller fetched it itself: committed without asking the substituter a second time
    built = store.realize(missing, _write("f", b"fetched"), substitute=False)
    assert built.file("f").read_bytes() == b"fetched"
    assert asked == [filled.key, missing.key]
    assert Store(tmp_path / "other").substitute(filled) is None  # no substituter: only a lookup
