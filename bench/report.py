"""The results table: one row per measured command, ratios against the baseline of its group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import MIB

if TYPE_CHECKING:
    from harness import Series

HEADER = ("benchmark", "command", "median s", "min-max s", "CPU s", "ratio", "peak RSS", "goal")


@dataclass(frozen=True)
class Row:
    group: str
    series: Series
    baseline: Series | None = None  # the ratio is median / baseline median
    goal: str = ""
    met: bool | None = None
    rss_goal: int | None = None  # bytes; checked against the peak over all runs
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.series.median / self.baseline.median

    def goal_text(self) -> str:
        parts = []
        if self.goal:
            parts.append(f"{self.goal}: {_verdict(self.met)}")
        if self.rss_goal is not None:
            ok = self.series.rss < self.rss_goal
            parts.append(f"RSS < {self.rss_goal // MIB} MiB: {_verdict(ok)}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)

    def cells(self) -> tuple[str, ...]:
        s = self.series
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        return (
            self.group,
            s.label,
            f"{s.median:.3f}",
            f"{s.low:.3f}-{s.high:.3f}",
            f"{s.cpu:.3f}",
            ratio,
            f"{s.rss / MIB:.0f} MiB" if s.rss_exact else f"≤ {s.rss / MIB:.0f} MiB",
            self.goal_text(),
        )


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "NOT met"


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def plain(rows: list[Row]) -> str:
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)
