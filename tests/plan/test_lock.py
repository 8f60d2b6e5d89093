"""eif.lock and `eifbuild lock`: trust on first use, then pinned builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from source_helpers import FAST, LocalServer, sha

from eifbuild.cli import main
from eifbuild.errors import ConfigError, HashMismatch
from eifbuild.plan.locking import lock_sources
from eifbuild.sources import ImageEntry, Lock, load_recipe, nar_digest_of_path
from eifbuild.sources.fetch import fetch_recipe
from eifbuild.store import Downloader, SourceCache, Store

KERNEL = b"an unpinned aarch64 kernel"
CONFIG = b"CONFIG_X=y\n"


@pytest.fixture
def recipe(tmp_path: Path, server: LocalServer) -> Path:
    path = tmp_path / "aws.toml"
    path.write_text(
        f"""
[recipe]
name = "aws-like"
[sources.kernel.aarch64]
url = "{server.serve("/Image", KERNEL)}"
[sources.kernel.x86_64]
url = "{server.serve("/bzImage", b"x86")}"
sha256 = "{sha(b"x86")}"
[sources.config]
url = "{server.serve("/config", CONFIG)}"
"""
    )
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIFBUILD_SOURCES_DIR", str(tmp_path / "sources"))


def _lock(recipe: Path, lock: Path, *, tofu: bool) -> list[tuple[str, str]]:
    results = lock_sources([recipe], lock, trust_on_first_use=tofu, downloader=Downloader(FAST))
    return [(r.source.qualified_name, r.status) for r in results]


def test_lock_without_tofu_names_the_flag(tmp_path: Path, recipe: Path, server: LocalServer) -> None:
    with pytest.raises(ConfigError) as info:
        _lock(recipe, tmp_path / "eif.lock", tofu=False)
    assert str(info.value) == (
        f"2 source(s) have no pin and no entry in {tmp_path / 'eif.lock'}: aws-like/kernel.aarch64, "
        f"aws-like/config; run 'eifbuild lock --trust-on-first-use {recipe}' to download them once "
        "and record their sha256"
    )
    assert not (tmp_path / "eif.lock").exists()
    assert server.requests == []


def test_tofu_records_url_size_sha256_then_builds_use_it(
    tmp_path: Path, recipe: Path, server: LocalServer
) -> None:
    lock_path = tmp_path / "eif.lock"
    assert _lock(recipe, lock_path, tofu=True) == [
        ("kernel.aarch64", "new"),
        ("kernel.x86_64", "pinned"),
        ("config", "new"),
    ]
    text = lock_path.read_text()
    assert (
        f'[sources.aws-like.kernel.aarch64]\nurl = "{server.url("/Image")}"\nsize = {len(KERNEL)}\n' in text
    )
    assert f'sha256 = "{sha(KERNEL)}"' in text
    assert f'[sources.aws-like.config]\nurl = "{server.url("/config")}"\nsize = {len(CONFIG)}\n' in text
    # A second run changes nothing and downloads nothing.
    before = len(server.requests)
    assert _lock(recipe, lock_path, tofu=False) == [
        ("kernel.aarch64", "locked"),
        ("kernel.x86_64", "pinned"),
        ("config", "locked"),
    ]
    assert lock_path.read_text() == text
    # A build with the lock: pinned, and the bytes come from the shared cache.
    loaded = load_recipe(recipe)
    got = fetch_recipe(loaded, "aarch64", store=Store(tmp_path / "store"), lock=Lock.load(lock_path))
    assert got["kernel"].path.read_bytes() == KERNEL
    assert got["kernel"].source.pinned_by == str(lock_path)
    assert len(server.requests) == before


def test_locked_source_that_changes_upstream_is_refused(
    tmp_path: Path, recipe: Path, server: LocalServer
) -> None:
    lock_path = tmp_path / "eif.lock"
    _lock(recipe, lock_path, tofu=True)
    server.routes["/Image"].body = b"a different kernel"
    with pytest.raises(HashMismatch, match=f"expected {sha(KERNEL)}"):
        fetch_recipe(
            load_recipe(recipe),
            "aarch64",
            store=Store(tmp_path / "store"),
            lock=Lock.load(lock_path),
            cache=SourceCache(tmp_path / "fresh-cache"),
            downloader=Downloader(FAST),
        )


def test_lock_entry_for_an_old_url_is_stale(tmp_path: Path, recipe: Path, server: LocalServer) -> None:
    lock_path = tmp_path / "eif.lock"
    _lock(recipe, lock_path, tofu=True)
    new_url = server.serve("/Image-v2", b"v2")
    recipe.write_text(recipe.read_text().replace(server.url("/Image"), new_url))
    with pytest.raises(ConfigError) as info:
        Lock.load(lock_path).apply_all(load_recipe(recipe).for_arch("aarch64"))
    assert str(info.value) == (
        f"{lock_path}: the pin of aws-like/kernel.aarch64 was recorded for url {server.url('/Image')!r}, "
        f"but the recipe now says {new_url!r}: run 'eifbuild lock --trust-on-first-use {recipe}' to pin the new one"
    )
    assert _lock(recipe, lock_path, tofu=True)[0] == ("kernel.aarch64", "new")
    assert f'url = "{new_url}"\nsize = 2\nsha256 = "{sha(b"v2")}"' in lock_path.read_text()


def test_entries_of_sources_now_pinned_by_the_recipe_are_dropped(tmp_path: Path, recipe: Path) -> None:
    lock_path = tmp_path / "eif.lock"
    _lock(recipe, lock_path, tofu=True)
    text = recipe.read_text().replace("[sources.config]\n", f'[sources.config]\nsha256 = "{sha(CONFIG)}"\n')
    recipe.write_text(text)
    assert ("config", "pinned") in _lock(recipe, lock_path, tofu=False)
    assert "config" not in lock_path.read_text()


def test_entries_of_other_recipes_are_kept(tmp_path: Path, recipe: Path, server: LocalServer) -> None:
    lock_path = tmp_path / "eif.lock"
    other = tmp_path / "other.toml"
    other.write_text(f'[recipe]\nname = "other"\n[sources.x]\nurl = "{server.serve("/x", b"x")}"\n')
    _lock(other, lock_path, tofu=True)
    _lock(recipe, lock_path, tofu=True)
    assert Lock.load(lock_path).entries.keys() == {
        ("other", "x", None),
        ("aws-like", "kernel", "aarch64"),
        ("aws-like", "config", None),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 2\n", r"key 'version': unsupported lock file version 2 \(expected 1\)"),
        ("version = 1\n[sources.r.s]\nurl = 'u'\nsize = 1\nsha256 = 'xyz'\n", "key 'sources.r.s.sha256'"),
        (
            "version = 1\n[sources.r.s]\nurl = 'u'\nsize = -1\nsha256 = '%s'\n" % ("a" * 64),
            "key 'sources.r.s.size'",
        ),
        (
            "version = 1\n[sources.r.s.risc]\nurl = 'u'\nsize = 1\nsha256 = '%s'\n" % ("a" * 64),
            "unknown arch",
        ),
        (
            "version = 1\n[sources.r.s]\nurl = 'u'\nsize = 1\nsha256 = '%s'\nextra = 1\n" % ("a" * 64),
            "unknown key",
        ),
    ],
)
def test_bad_lock_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "eif.lock").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Lock.load(tmp_path / "eif.lock")


def test_cli_lock_prints_each_new_hash(
    tmp_path: Path,
    recipe: Path,
    server: LocalServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["lock", str(recipe)]) == 2
    assert "run 'eifbuild lock --trust-on-first-use" in capsys.readouterr().err
    assert main(["-q", "lock", str(recipe), "--trust-on-first-use"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"new    aws-like/kernel.aarch64 {sha(KERNEL)} {len(KERNEL)} {server.url('/Image')}",
        "pinned aws-like/kernel.x86_64",
        f"new    aws-like/config {sha(CONFIG)} {len(CONFIG)} {server.url('/config')}",
        "wrote eif.lock",
    ]
    assert (tmp_path / "eif.lock").exists()
    assert main(["fetch", str(recipe), "--arch", "aarch64", "--cache", "store"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["kernel.aarch64", sha(KERNEL)], ["config", sha(CONFIG)]]


def test_local_directory_is_locked_by_its_nar_hash(tmp_path: Path) -> None:
    (tmp_path / "rootfs" / "bin").mkdir(parents=True)
    (tmp_path / "rootfs" / "bin" / "app").write_bytes(b"app")
    recipe = tmp_path / "dir.toml"
    recipe.write_text('[recipe]\nname = "dir"\n[sources.rootfs]\npath = "rootfs"\n')
    lock_path = tmp_path / "eif.lock"
    [result] = lock_sources([recipe], lock_path, trust_on_first_use=True)
    nar = nar_digest_of_path(tmp_path / "rootfs")
    assert (result.status, result.sha256, result.size) == ("new", nar.sha256, nar.size)
    got = fetch_recipe(load_recipe(recipe), "x86_64", store=Store(tmp_path / "s"), lock=Lock.load(lock_path))
    assert got["rootfs"].is_tree
    assert got["rootfs"].sha256 == nar.sha256
    assert (got["rootfs"].path / "bin" / "app").read_bytes() == b"app"


def test_directory_pinned_by_a_file_hash_only_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    recipe = tmp_path / "dir.toml"
    recipe.write_text(f'[recipe]\nname = "dir"\n[sources.t]\npath = "tree"\nhash = "sha512-{"A" * 86}=="\n')
    with pytest.raises(ConfigError, match=r"is a directory: pin it with nar_hash"):
        fetch_recipe(load_recipe(recipe), "x86_64", store=Store(tmp_path / "s"))


def test_a_lock_entry_digest_in_upper_case_is_read_as_lower_case(tmp_path: Path) -> None:
    digest = "AB" * 32  # the one hex rule of util.tomltable: either case, kept lower case (as recipes)
    (tmp_path / "eif.lock").write_text(
        f"version = 1\n[sources.r.s]\nurl = 'u'\nsize = 1\nsha256 = '{digest}'\n"
    )
    assert Lock.load(tmp_path / "eif.lock").entries[("r", "s", None)].sha256 == digest.lower()


def test_image_pins_round_trip_and_old_lock_files_stay_readable(tmp_path: Path) -> None:
    old = tmp_path / "old.lock"
    old.write_text(
        f'version = 1\n\n[sources.r.kernel]\nurl = "https://x/k"\nsize = 1\nsha256 = "{"a" * 64}"\n'
    )
    lock = Lock.load(old)
    assert lock.images == {}
    lock.record_image(
        "reg.example/app:v1", ImageEntry("sha256:" + "1" * 64, {"x86_64": "sha256:" + "2" * 64})
    )
    lock.save()
    text = old.read_text()
    assert '[images."reg.example/app:v1"]\ndigest = "sha256:' + "1" * 64 + '"\n' in text
    assert 'manifests = { x86_64 = "sha256:' + "2" * 64 + '" }\n' in text
    again = Lock.load(old)
    assert again.images == lock.images
    assert again.entries == lock.entries


def _project(root: Path, recipe_text: str, arches: str) -> Path:
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "r.toml").write_text(recipe_text)
    (root / "eif.toml").write_text(
        f'[eif]\nname = "app"\narch = {arches}\nrecipes = ["recipes/r.toml"]\ncmdline = "c"\n'
        '[bootstrap]\nkernel = "r.kernel"\ninit = { path = "init" }\n[app]\ncmd = ["/app"]\n'
        'files = { "/app" = { text = "x" } }\n'
    )
    return root


def test_lock_fetches_only_the_arches_eif_toml_builds(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #27: `--bootstrap aws` with arch = ["x86_64"] still downloaded the aarch64 kernel."""
    recipe = (
        f'[recipe]\nname = "r"\n[sources.kernel.x86_64]\nurl = "{server.serve("/bzImage", b"x86")}"\n'
        f'[sources.kernel.aarch64]\nurl = "{server.serve("/Image", KERNEL)}"\n'
    )
    project = _project(tmp_path / "app", recipe, '["x86_64"]')
    monkeypatch.chdir(project)
    assert main(["-q", "lock", "--trust-on-first-use"]) == 0, capsys.readouterr().err
    assert [r.path for r in server.requests] == ["/bzImage"]
    text = (project / "eif.lock").read_text()
    assert "[sources.r.kernel.x86_64]" in text
    assert "aarch64" not in text


def test_lock_keeps_what_it_locked_when_one_fetch_fails(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #27: when one fetch failed, `eifbuild lock` recorded nothing."""
    recipe = (
        f'[recipe]\nname = "r"\n[sources.kernel]\nurl = "{server.serve("/bzImage", b"x86")}"\n'
        f'[sources.config]\nurl = "{server.serve("/missing", status=404)}"\n'
        f'[sources.extra]\nurl = "{server.serve("/gone", status=404)}"\n'
    )
    project = _project(tmp_path / "app", recipe, '["x86_64"]')
    monkeypatch.chdir(project)
    assert main(["lock", "--trust-on-first-use"]) == 2
    err = capsys.readouterr().err
    assert "/missing" in err.splitlines()[-1]
    assert "also not locked" in err
    assert "/gone" in err
    text = (project / "eif.lock").read_text()
    assert "[sources.r.kernel]" in text
    assert f'sha256 = "{sha(b"x86")}"' in text
    assert "sources.r.config" not in text
