"""``eifbuild boot --attest``: compare the PCRs the guest read from its NSM device with the EIF's,
and verify the attestation document it asked for.

eifbuild's init, seeing ``eifbuild.attest=1`` on the kernel command line, prints one console line
per PCR it asked the NSM for (``eifbuild-init: attest: PCR<n> locked|unlocked <hex>``), or
``eifbuild-init: attest: unavailable: <why>``. QEMU's nitro-enclave machine measures the EIF
itself, so equal values show that QEMU's independent reading of the file agrees with ours.

Then init asks the NSM for an attestation document carrying ``eifbuild.nonce=<hex>`` (a fresh
nonce per boot, also unmeasured) and prints it base64-encoded in numbered lines
(``eifbuild-init: attest: document <k>/<n> <base64>``) or ``… document error: <why>``. The
document is verified by :func:`eifbuild.attestation.verify` against the EIF's PCRs and that nonce;
QEMU's NSM signs nothing, so the chain and signature rules are skipped (``insecure_emulator``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..errors import AttestationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..eif import Measurements

ATTEST_FLAG: Final = "eifbuild.attest=1"
NONCE_PREFIX: Final = "eifbuild.nonce="
NONCE_SIZE: Final = 32
UNSIGNED: Final = "chain and signature not checked: QEMU's NSM does not sign"
_PCR_LINE: Final = re.compile(r"eifbuild-init: attest: PCR(\d+) (locked|unlocked) ([0-9a-f]+)")
_PROBLEM_LINE: Final = re.compile(r"eifbuild-init: attest: (unavailable: .*|PCR\d+ error: .*)")
_DOCUMENT_LINE: Final = re.compile(r"eifbuild-init: attest: document (\d+)/(\d+) ([A-Za-z0-9+/=]+)$")
_DOCUMENT_ERROR: Final = re.compile(r"eifbuild-init: attest: document error: (.*)")
_MAX_LINES: Final = 64  # init's document is at most 0x3000 bytes: 43 lines of 288 bytes
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


def new_nonce() -> bytes:
    """A fresh nonce for one boot."""
    return secrets.token_bytes(NONCE_SIZE)


def append_words(nonce: bytes) -> str:
    """What ``--attest`` appends to the kernel command line (after QEMU measured it)."""
    return f"{ATTEST_FLAG} {NONCE_PREFIX}{nonce.hex()}"


def read_document(lines: Iterable[str]) -> tuple[bytes | None, str]:
    """The document init printed (its first complete set of numbered lines: init prints before
    the app runs), or None and why not."""
    total = 0
    chunks: dict[int, str] = {}
    problem = "eifbuild's init printed no attestation document"
    for line in lines:
        if match := _DOCUMENT_ERROR.search(line):
            problem = f"the guest could not get a document: {match[1].strip()}"
        match = _DOCUMENT_LINE.search(line.strip())
        if match is None:
            continue
        k, n = int(match[1]), int(match[2])
        if not 1 <= k <= n <= _MAX_LINES or (total and n != total):
            continue
        total = n
        chunks.setdefault(k, match[3])
        if len(chunks) == total:
            try:
                return base64.b64decode("".join(chunks[i] for i in range(1, total + 1)), validate=True), ""
            except binascii.Error:
                return None, "the attestation document's lines are not base64"
    if total:
        problem = f"the attestation document is incomplete ({len(chunks)} of {total} lines)"
    return None, problem


def check_document(document: bytes | None, problem: str, expected: Measurements, nonce: bytes) -> Attestation:
    """Verify the document against the EIF's PCRs and the nonce; QEMU signs nothing, so only with
    the chain and signature rules skipped (and the verdict says so)."""
    from ..attestation import verify  # noqa: PLC0415 - cryptography only for --attest

    if document is None:
        return Attestation(False, f"attestation document missing: {problem}")
    pcrs = {int(name[3:]): value for name, value in expected.pcrs().items()}
    try:
        verified = verify(document, pcrs=pcrs, nonce=nonce, insecure_emulator=True)
    except AttestationError as exc:
        return Attestation(False, f"attestation document not verified: {exc}")
    checked = ", ".join(name for name in verified.checked if name != "structure")
    return Attestation(True, f"document verified ({checked}; {UNSIGNED})")
