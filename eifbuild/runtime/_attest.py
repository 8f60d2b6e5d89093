"""``eifbuild boot --attest``: compare the PCRs the guest read from its NSM device with the EIF's.

eifbuild's init, seeing ``eifbuild.attest=1`` on the kernel command line, prints one console line
per PCR it asked the NSM for (``eifbuild-init: attest: PCR<n> locked|unlocked <hex>``), or
``eifbuild-init: attest: unavailable: <why>``. QEMU's nitro-enclave machine measures the EIF
itself, so equal values show that QEMU's independent reading of the file agrees with ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..eif import Measurements

ATTEST_FLAG: Final = "eifbuild.attest=1"
_PCR_LINE: Final = re.compile(r"eifbuild-init: attest: PCR(\d+) (locked|unlocked) ([0-9a-f]+)")
_PROBLEM_LINE: Final = re.compile(r"eifbuild-init: attest: (unavailable: .*|PCR\d+ error: .*)")
_SHOWN: Final = 16  # hex digits of a differing value shown in the verdict


@dataclass(frozen=True)
class ReadPcr:
    index: int
    locked: bool
    value: str


@dataclass(frozen=True)
class Attestation:
    ok: bool
    detail: str


def read_pcrs(console: str) -> tuple[dict[int, ReadPcr], list[str]]:
    """The PCRs init printed (the last line per index wins) and its problem lines."""
    pcrs: dict[int, ReadPcr] = {}
    problems: list[str] = []
    for line in console.splitlines():
        if match := _PCR_LINE.search(line):
            index = int(match[1])
            pcrs[index] = ReadPcr(index, match[2] == "locked", match[3])
        elif match := _PROBLEM_LINE.search(line):
            problems.append(match[1].strip())
    return pcrs, problems


def _short(value: str) -> str:
    return value[:_SHOWN] + "…" if len(value) > _SHOWN else value


def compare(console: str, expected: Measurements) -> Attestation:
    """PASS only if every PCR of the EIF (0, 1, 2; 8 when signed) was read, is equal and locked."""
    want = {int(name[3:]): value for name, value in expected.pcrs().items()}
    names = ", ".join(f"PCR{i}" for i in sorted(want))
    read, problems = read_pcrs(console)
    unavailable = [p for p in problems if p.startswith("unavailable")]
    if unavailable:
        return Attestation(False, f"attestation impossible: the guest has no NSM device ({unavailable[-1]})")
    if not read and not problems:
        why = "the EIF's init printed no PCRs (only eifbuild's init reads them for --attest)"
        return Attestation(False, f"attestation impossible: {why}")
    missing = [f"PCR{i}" for i in sorted(want) if i not in read]
    if missing:
        why = f": {problems[-1]}" if problems else ""
        return Attestation(False, f"attestation failed: {', '.join(missing)} not read{why}")
    differ = [i for i in sorted(want) if read[i].value != want[i]]
    if differ:
        first = differ[0]
        shown = f"NSM {_short(read[first].value)}, EIF {_short(want[first])}"
        listed = ", ".join(f"PCR{i}" for i in differ)
        return Attestation(False, f"attestation failed: {listed} differ from the EIF's ({shown})")
    unlocked = [f"PCR{i}" for i in sorted(want) if not read[i].locked]
    if unlocked:
        return Attestation(False, f"attestation failed: {', '.join(unlocked)} not locked")
    return Attestation(True, f"attested: {names} equal the EIF's and are locked")
