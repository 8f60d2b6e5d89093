"""What a build step is: typed parameters, input digests and tool identity; its key is their hash.

Each kind of step has one frozen dataclass of parameters (a :class:`StepParams`): it names the
kind and its version (class variables ``KIND`` and ``VERSION``), its :meth:`~StepParams.to_json`
is what the key is computed from, and it is the only value :meth:`Store.realize
<eifbuild.store.Store.realize>` hands the step's builder. The key and the action therefore read
the same object and cannot drift apart.

:class:`RawParams` carries parameters known only as JSON: a step replayed from a record (a store
entry copied between stores, a shared cache's manifest). Such a step is never given to an action
that builds anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class StepParams(Protocol):
    """The parameters of one kind of step: its kind, its version and the JSON its key covers."""

    @property
    def kind(self) -> str: ...

    @property
    def version(self) -> int: ...

    def to_json(self) -> Mapping[str, Any]:
        """The parameters as the key sees them (JSON values only)."""
        ...


class TypedParams:
    """Base of the frozen dataclasses of a step kind's parameters: ``KIND`` and ``VERSION`` name
    the kind (bump ``VERSION`` when :meth:`to_json` or the action's output changes)."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int]

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def version(self) -> int:
        return self.VERSION

    def to_json(self) -> Mapping[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class RawParams:
    """Parameters known only as JSON: a recorded step replayed (or a test's ad-hoc step)."""

    kind: str
    version: int
    raw: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> Mapping[str, Any]:
        return self.raw


P_co = TypeVar("P_co", bound=StepParams, covariant=True)


@dataclass(frozen=True)
class Step(Generic[P_co]):
    """What a build step is: ``params`` (kind, version and parameters) + ``inputs`` (name → sha256)
    + ``tool``.

    Everything that can change the output must be in here; nothing else may be (no paths of the
    machine, no times), or the key stops being portable between machines.
    """

    params: P_co
    inputs: Mapping[str, str] = field(default_factory=dict)
    tool: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.params.kind

    @property
    def version(self) -> int:
        return self.params.version

    @classmethod
    def recorded(cls, described: Mapping[str, Any]) -> Step[RawParams]:
        """The step a record's ``describe()`` JSON stands for (a ``KeyError``/``TypeError`` if malformed)."""
        kind, version = described["kind"], described["version"]
        params, inputs, tool = described["params"], described["inputs"], described["tool"]
        if not isinstance(kind, str) or isinstance(version, bool) or not isinstance(version, int):
            msg = "step kind and version must be a string and an integer"
            raise TypeError(msg)
        if not all(isinstance(part, dict) for part in (params, inputs, tool)):
            msg = "step params, inputs and tool must be objects"
            raise TypeError(msg)
        return Step(RawParams(kind, version, params), inputs, tool)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "params": dict(self.params.to_json()),
            "inputs": dict(self.inputs),
            "tool": dict(self.tool),
        }

    @property
    def key(self) -> str:
        return hashlib.sha256(canonical_json(self.describe())).hexdigest()
