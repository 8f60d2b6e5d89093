"""treepath.resolve: symlinks followed inside a tree the way the kernel would, the tree as root."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eifbuild.util.treepath import (
    MAX_HOPS,
    OutsideTreeError,
    SymlinkLoopError,
    UnresolvablePathError,
    resolve,
    resolve_link,
    split,
)


@dataclass(frozen=True)
class N:
    kind: str
    target: str = ""


TREE = {
    "usr": N("dir"),
    "usr/bin": N("dir"),
    "usr/bin/app": N("file"),
    "bin": N("symlink", "usr/bin"),
    "abs": N("symlink", "/usr/bin/app"),
    "up": N("symlink", "../../../usr"),
    "loop": N("symlink", "loop"),
    "file": N("file"),
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("usr/bin/app", ["usr", "bin", "app"]),
        ("bin/app", ["usr", "bin", "app"]),
        ("/./bin//app", ["usr", "bin", "app"]),
        ("abs", ["usr", "bin", "app"]),  # an absolute target starts again at the tree's top
        ("up/bin/app", ["usr", "bin", "app"]),  # '..' never climbs above it
        ("usr/../bin/app", ["usr", "bin", "app"]),
        ("", []),
    ],
)
def test_lookup_follows_symlinks_inside_the_tree(path: str, expected: list[str]) -> None:
    assert resolve(split(path), TREE.get) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("usr/sbin/app", "'usr/sbin' does not exist"),
        ("file/x", "parent 'file' is a file, not a directory"),
        ("loop/x", "too many levels of symbolic links resolving 'loop/x'"),
    ],
)
def test_lookup_errors(path: str, message: str) -> None:
    with pytest.raises(UnresolvablePathError, match=f"^{message}$"):
        resolve(split(path), TREE.get)


def test_create_takes_missing_components_as_new_directories() -> None:
    assert resolve(["bin", "new", "deeper"], TREE.get, create=True) == ["usr", "bin", "new", "deeper"]
    with pytest.raises(UnresolvablePathError, match="parent 'usr/bin/app' is a file"):
        resolve(["bin", "app"], TREE.get, create=True)  # the last component must be a directory too


def test_hop_limit_is_linux_maxsymlinks() -> None:
    chain = {f"l{i}": N("symlink", f"l{i + 1}") for i in range(MAX_HOPS)}
    chain[f"l{MAX_HOPS}"] = N("dir")
    assert resolve(["l0"], chain.get) == [f"l{MAX_HOPS}"]
    chain[f"l{MAX_HOPS}"] = N("symlink", "end")
    chain["end"] = N("dir")
    with pytest.raises(UnresolvablePathError, match="too many levels"):
        resolve(["l0"], chain.get)


def test_a_closed_tree_lets_links_dangle_but_never_leave() -> None:
    get = TREE.get
    assert resolve_link(["usr"], "bin/app", get) == ["usr", "bin", "app"]
    assert resolve_link([], "missing/x", get) == ["missing", "x"]  # dangling is fine
    assert resolve_link([], "file/x", get) == ["file", "x"]
    with pytest.raises(OutsideTreeError) as info:
        resolve_link([], "abs", get)  # through a link with an absolute target
    assert (info.value.target, info.value.absolute) == ("/usr/bin/app", True)
    with pytest.raises(OutsideTreeError) as info:
        resolve_link(["usr"], "../up", get)
    assert (info.value.target, info.value.absolute) == ("../../../usr", False)
    with pytest.raises(SymlinkLoopError):
        resolve_link([], "loop", get)
