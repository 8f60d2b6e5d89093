"""The nodes of a build plan: what each one produced (:class:`Result`) and the node protocol.

Every node can say what its store key is *without building anything* (:meth:`Node.key`), from the
digests of its inputs. A node is current when its result can be found without building
(:meth:`Node.cached`); :meth:`Node.build` realizes it. The kinds of nodes live in ``inputs.py``,
``ramdisks.py`` and ``eifnode.py``; ``plan.py`` wires them into a graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..errors import EifbuildError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ..store import Step, Store, StoreEntry


class Result(Protocol):
    """What a node produced, as far as the nodes after it and the gc roots need to know."""

    @property
    def sha256(self) -> str:
        """The content digest that goes into the keys of the nodes depending on this one."""
        ...

    def store_keys(self) -> frozenset[str]:
        """The store entries this result lives in (what ``eifbuild store gc`` must keep)."""
        ...


@dataclass(frozen=True)
class Artifact:
    """A file (or a directory for trees) and its content digest; ``key`` names its store entry."""

    path: Path
    sha256: str
    key: str | None = None

    def store_keys(self) -> frozenset[str]:
        return frozenset() if self.key is None else frozenset({self.key})

    @classmethod
    def in_entry(cls, entry: StoreEntry, name: str) -> Artifact:
        """The output file ``name`` of a store entry."""
        return cls(entry.file(name), entry.digest(name), entry.key)


R = TypeVar("R", bound=Result)


class Node(Generic[R]):
    """A build step of the plan. Subclasses set ``task`` (doit name, "" for none) and ``deps``."""

    task: str = ""
    doc: str = ""
    deps: tuple[Node[Any], ...] = ()

    def __init__(self) -> None:
        self._result: R | None = None

    def key(self) -> str | None:
        """The store key, or None while an input is not built yet."""
        step = self.step()
        return None if step is None else step.key

    def step(self) -> Step[Any] | None:
        raise NotImplementedError

    def cached(self) -> R | None:
        """The result if it exists already; never builds or downloads."""
        if self._result is None:
            self._result = self._lookup()
        return self._result

    def _lookup(self) -> R | None:
        raise NotImplementedError

    def build(self) -> R:
        """Realize this node (its deps must have been built)."""
        if self._result is None:
            self._result = self._realize()
        return self._result

    def _realize(self) -> R:
        raise NotImplementedError

    def current(self) -> bool:
        """doit's up-to-date check: looks, never writes a result."""
        try:
            return self.cached() is not None
        except EifbuildError:
            return False  # the action will raise it again, with its message

    def require(self) -> R:
        """The result of a dependency, which doit has built before us."""
        found = self.cached()
        if found is None:
            found = self.build()
        return found

    def _step_after_deps(self) -> Step[Any]:
        """This node's step once every dependency is realized (built, if doit has not yet)."""
        for dep in self.deps:
            dep.require()
        step = self.step()
        if step is None:  # pragma: no cover - every input was just built
            msg = f"{self.task}: an input is missing"
            raise EifbuildError(msg)
        return step


class StoredNode(Node[R]):
    """A node whose result lives in the store (or, for project files, whose digests are cached there)."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def _stored(self) -> StoreEntry | None:
        """The store entry of this node's step, if its inputs are built and it was run before."""
        key = self.key()
        return self.store.get(key) if key else None


def cached_results(nodes: Mapping[str, Node[Any]]) -> dict[str, Result] | None:
    """Each node's result by name, or None while one of them is not built yet."""
    found: dict[str, Result] = {}
    for name, node in nodes.items():
        result = node.cached()
        if result is None:
            return None
        found[name] = result
    return found


def digests(results: Mapping[str, Result]) -> dict[str, str]:
    return {name: result.sha256 for name, result in results.items()}
