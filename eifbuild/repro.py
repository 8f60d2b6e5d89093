"""The pinned clock: SOURCE_DATE_EPOCH or the Unix epoch, never "now"."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from .errors import UsageError


def source_date_epoch(environ: dict[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH as an int, None when unset or empty; a malformed value is an error."""
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        msg = f"SOURCE_DATE_EPOCH={raw!r}: expected a non-negative integer number of seconds"
        raise UsageError(msg)
    return int(raw)


def pinned_epoch(environ: dict[str, str] | None = None) -> int:
    """The timestamp reproducible outputs use by default: SOURCE_DATE_EPOCH, else 0."""
    epoch = source_date_epoch(environ)
    return 0 if epoch is None else epoch


def rfc3339(epoch: int) -> str:
    """``1970-01-01T00:00:00+00:00``: the form eif_build writes for BuildTime."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()
