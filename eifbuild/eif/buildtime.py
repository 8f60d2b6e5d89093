"""BuildTime, parsed once: eif.toml's ``build_time`` and ``eifbuild pack --build-time`` share
:func:`parse_build_time`, and everything after it (the EIF step's key, the metadata writer, the
ramdisks' mtimes) trusts the :class:`BuildTime` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from .. import repro
from ..errors import UsageError
from ..util.tomltable import type_name

MAX_EPOCH: Final = 0xFFFFFFFF  # a newc cpio mtime has 8 hex digits


@dataclass(frozen=True)
class BuildTime:
    """An EIF's BuildTime: ``text`` as written into the metadata (an RFC 3339 string given by the
    user is kept verbatim, as eif_build does), ``epoch`` the same instant in whole seconds, clamped
    at 0 (the mtime of the ramdisks' files)."""

    text: str
    epoch: int

    @classmethod
    def from_epoch(cls, epoch: int) -> BuildTime:
        return cls(repro.rfc3339(epoch), epoch)

    @classmethod
    def pinned(cls, environ: dict[str, str] | None = None) -> BuildTime:
        """The default: SOURCE_DATE_EPOCH, else 1970-01-01T00:00:00+00:00 (never the current time)."""
        return cls.from_epoch(repro.pinned_epoch(environ))


def parse_build_time(value: object, *, where: str = "build_time") -> BuildTime:
    """An RFC 3339 time with a UTC offset (kept verbatim) or non-negative epoch seconds; anything
    else is a :class:`UsageError` whose ``key`` is ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        msg = f"expected an RFC 3339 string or epoch seconds, got {type_name(value)}"
        raise UsageError(msg, key=where)
    if isinstance(value, int):
        if value < 0:
            msg = "expected non-negative epoch seconds"
            raise UsageError(msg, key=where)
        if value > MAX_EPOCH:
            msg = f"expected epoch seconds up to {MAX_EPOCH} (the cpio format's last second, in 2106)"
            raise UsageError(msg, key=where)
        return BuildTime.from_epoch(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        msg = f"expected an RFC 3339 time like '2024-01-01T00:00:00+00:00', got {value!r}"
        raise UsageError(msg, key=where) from None
    if parsed.tzinfo is None:
        msg = f"{value!r} has no UTC offset; add '+00:00'"
        raise UsageError(msg, key=where)
    epoch = max(0, int(parsed.timestamp()))
    if epoch > MAX_EPOCH:
        msg = f"{value!r} is after 2106-02-07T06:28:15Z, the cpio format's last second"
        raise UsageError(msg, key=where)
    return BuildTime(value, epoch)
