"""Paths inside an image tree, with symlinks followed the way the kernel follows them.

The tree is its own root: an absolute symlink target starts again at the tree's top and ``..``
never climbs above it. Used for OCI layers (where a member's parent directory really is) and for
ramdisks (what the program a cmd names resolves to). Source archives are closed trees instead
(:func:`resolve_link`): a symlink may dangle, but may not leave the tree at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

MAX_HOPS: Final = 40  # Linux's MAXSYMLINKS


class Linkable(Protocol):
    """A tree node: its kind ("dir", "symlink", "file", ...) and, for a symlink, its target."""

    @property
    def kind(self) -> str: ...

    @property
    def target(self) -> str: ...


class UnresolvablePathError(Exception):
    """The path names nothing, loops, or crosses a non-directory; the message says which."""


class SymlinkLoopError(UnresolvablePathError):
    """More than MAX_HOPS symlinks to follow."""


class OutsideTreeError(UnresolvablePathError):
    """In a closed tree: ``target``, a symlink's target, is absolute or climbs above the root."""

    def __init__(self, target: str, *, absolute: bool) -> None:
        super().__init__(f"symlink to {target!r} points outside the tree")
        self.target = target
        self.absolute = absolute


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
    todo = [(p, "") for p in asked if p not in ("", ".")]
    return _walk(todo, [], get, asked="/".join(asked), create=create)


def resolve_link(parent: Iterable[str], target: str, get: Callable[[str], Linkable | None]) -> list[str]:
    """Where a symlink in the directory ``parent`` (already resolved) pointing to ``target`` leads,
    in a closed tree: it may dangle or cross files, but neither it nor any symlink it goes through
    may be absolute or climb above the root (OutsideTreeError names that symlink's target).
    Raises SymlinkLoopError after more than MAX_HOPS further symlinks."""
    if target.startswith("/"):
        raise OutsideTreeError(target, absolute=True)
    todo = [(p, target) for p in split(target)]
    return _walk(todo, list(parent), get, asked=target, closed=True)


def _walk(
    todo: list[tuple[str, str]],
    cur: list[str],
    get: Callable[[str], Linkable | None],
    *,
    asked: str,
    create: bool = False,
    closed: bool = False,
) -> list[str]:
    """Resolve ``todo`` (components, each with the symlink target it came from) from ``cur``."""
    hops = 0
    while todo:
        part, origin = todo.pop(0)
        if part == "..":
            if cur:
                cur.pop()
            elif closed:
                raise OutsideTreeError(origin, absolute=False)
            continue
        path = "/".join([*cur, part])
        node = get(path)
        if node is not None and node.kind == "symlink":
            hops += 1
            if hops > MAX_HOPS:
                msg = f"too many levels of symbolic links resolving {asked!r}"
                raise SymlinkLoopError(msg)
            if node.target.startswith("/"):
                if closed:
                    raise OutsideTreeError(node.target, absolute=True)
                cur = []
            todo[:0] = [(p, node.target) for p in split(node.target)]
            continue
        if not closed:
            _check_step(node, path, create=create, last=not todo)
        cur.append(part)
    return cur


def _check_step(node: Linkable | None, path: str, *, create: bool, last: bool) -> None:
    if node is None and not create:
        msg = f"{path!r} does not exist"
        raise UnresolvablePathError(msg)
    if node is not None and node.kind != "dir" and (create or not last):
        msg = f"parent {path!r} is a {node.kind}, not a directory"
        raise UnresolvablePathError(msg)


def listing_problems(nodes: Mapping[str, Linkable]) -> list[str]:
    """What makes a listing of a closed tree (path → node, e.g. a store entry's outputs) unsafe to
    write or to trust: a path below a symlink or a file (writing it would go through that node),
    and a symlink that leads outside the tree. Empty when there is nothing."""
    problems = []
    for path in sorted(nodes):
        parts = split(path)
        for i in range(1, len(parts)):
            above = nodes.get("/".join(parts[:i]))
            if above is not None and above.kind != "dir":
                problems.append(f"{path!r} goes through the {above.kind} {'/'.join(parts[:i])!r}")
                break
        node = nodes[path]
        if node.kind == "symlink":
            try:
                resolve_link(parts[:-1], node.target, nodes.get)
            except OutsideTreeError:
                problems.append(f"symlink {path!r} to {node.target!r} leads outside the tree")
            except SymlinkLoopError:
                pass  # dangling in a loop: harmless to write and to read
    return problems
