"""Paths inside an image tree, with symlinks followed the way the kernel follows them.

The tree is its own root: an absolute symlink target starts again at the tree's top and ``..``
never climbs above it. Used for OCI layers (where a member's parent directory really is) and for
ramdisks (what the program a cmd names resolves to).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

MAX_HOPS: Final = 40  # Linux's MAXSYMLINKS


class Linkable(Protocol):
    """A tree node: its kind ("dir", "symlink", "file", ...) and, for a symlink, its target."""

    @property
    def kind(self) -> str: ...

    @property
    def target(self) -> str: ...


class UnresolvablePathError(Exception):
    """The path names nothing, loops, or crosses a non-directory; the message says which."""


def split(path: str) -> list[str]:
    """The components of ``path``, without empty ones and ``.``."""
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve(
    parts: Iterable[str], get: Callable[[str], Linkable | None], *, create: bool = False
) -> list[str]:
    """The components of the real location of ``parts``, every symlink on the way followed.

    ``get`` returns the node at a resolved path, or None. With ``create`` the path is a directory
    about to be made (as tar extraction makes parents): a missing component is taken as a new
    directory, and every existing one must be a directory. Without it the path must exist, and
    only its last component may be a non-directory. Raises UnresolvablePathError otherwise, and
    after more than MAX_HOPS symlinks.
    """
    asked = list(parts)
    todo = [p for p in asked if p not in ("", ".")]
    cur: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if cur:
                cur.pop()
            continue
        path = "/".join([*cur, part])
        node = get(path)
        if node is not None and node.kind == "symlink":
            hops += 1
            if hops > MAX_HOPS:
                msg = f"too many levels of symbolic links resolving {'/'.join(asked)!r}"
                raise UnresolvablePathError(msg)
            if node.target.startswith("/"):
                cur = []
            todo[:0] = split(node.target)
            continue
        if node is None and not create:
            msg = f"{path!r} does not exist"
            raise UnresolvablePathError(msg)
        if node is not None and node.kind != "dir" and (create or todo):
            msg = f"parent {path!r} is a {node.kind}, not a directory"
            raise UnresolvablePathError(msg)
        cur.append(part)
    return cur
