"""Rendering a :class:`~.diff.DiffResult`: the text report and the ``--json`` object."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from ..eif import JsonValue
    from .diff import Change, DiffResult


def diff_json(result: DiffResult, a: Path, b: Path) -> dict[str, JsonValue]:
    """The ``diff --json`` object (schema in the README)."""
    before, after = result.measurements
    return {
        "a": str(a),
        "b": str(b),
        "identical": result.identical,
        "algo": result.algo,
        "pcrs": list(result.pcrs),
        "measurements": {"a": dict(before), "b": dict(after)},
        "changes": [_change_json(c) for c in result.changes],
    }


def _change_json(change: Change) -> dict[str, JsonValue]:
    return {
        "where": change.where,
        "measured": change.measured,
        "pcrs": list(change.pcrs),
        "detail": change.detail,
    }


def diff_text(result: DiffResult, a: Path, b: Path) -> str:
    """The report: the PCRs that differ, then measured changes, then the ones no PCR sees."""
    if result.identical:
        return f"{a} and {b} are identical\n"
    lines = [f"{a} and {b} differ"]
    if result.pcrs:
        before, after = result.measurements
        lines.append(f"PCRs that differ ({result.algo}): {', '.join(result.pcrs)}")
        for name in result.pcrs:
            lines.append(f"  {name}  {before.get(name, '(none)')}")
            lines.append(f"  {' ' * len(name)}→ {after.get(name, '(none)')}")
    else:
        lines.append(f"PCRs ({result.algo}): all equal")
    measured = [c for c in result.changes if c.measured]
    unmeasured = [c for c in result.changes if not c.measured]
    if measured:
        lines.append("measured changes:")
        lines += [_change_line(c) for c in measured]
    if unmeasured:
        lines.append("not measured (no PCR changes):")
        lines += [_change_line(c) for c in unmeasured]
    return "\n".join(lines) + "\n"


def _change_line(change: Change) -> str:
    moves = f" [{' '.join(change.pcrs)}]" if change.pcrs else ""
    return f"  {change.where}{moves}: {change.detail}"
