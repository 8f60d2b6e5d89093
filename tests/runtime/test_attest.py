"""``boot --attest``: reading init's PCR lines and judging them against the EIF's measurements."""

from __future__ import annotations

import pytest

from eifbuild.eif import Measurements
from eifbuild.runtime._attest import compare, read_pcrs

P0, P1, P2, P8 = ("a" * 96, "b" * 96, "c" * 96, "d" * 96)
EIF = Measurements("sha384", P0, P1, P2)
SIGNED = Measurements("sha384", P0, P1, P2, P8)


def _lines(*pcrs: tuple[int, str, str]) -> str:
    noise = "[    0.9] random: crng init done\r\n"
    return noise + "".join(f"eifbuild-init: attest: PCR{i} {lock} {value}\n" for i, lock, value in pcrs)


GOOD = _lines((0, "locked", P0), (1, "locked", P1), (2, "locked", P2), (8, "locked", "0" * 96))


def test_equal_and_locked_passes() -> None:
    result = compare(GOOD, EIF)
    assert (result.ok, result.detail) == (True, "attested: PCR0, PCR1, PCR2 equal the EIF's and are locked")


def test_a_signed_eif_needs_pcr8_too() -> None:
    result = compare(GOOD, SIGNED)
    assert not result.ok
    assert (
        result.detail == f"attestation failed: PCR8 differ from the EIF's (NSM {'0' * 16}…, EIF {'d' * 16}…)"
    )
    signed = GOOD.replace("0" * 96, P8)
    assert compare(signed, SIGNED).detail == "attested: PCR0, PCR1, PCR2, PCR8 equal the EIF's and are locked"


def test_differences_are_named() -> None:
    console = _lines((0, "locked", "e" * 96), (1, "locked", P1), (2, "locked", "f" * 96))
    assert compare(console, EIF).detail.startswith(
        "attestation failed: PCR0, PCR2 differ from the EIF's (NSM eeee"
    )


def test_an_unlocked_pcr_fails() -> None:
    console = _lines((0, "locked", P0), (1, "unlocked", P1), (2, "locked", P2))
    assert compare(console, EIF).detail == "attestation failed: PCR1 not locked"


@pytest.mark.parametrize(
    ("console", "detail"),
    [
        (
            "eifbuild-init: attest: unavailable: open /dev/nsm: No such file or directory\n",
            "attestation impossible: the guest has no NSM device "
            "(unavailable: open /dev/nsm: No such file or directory)",
        ),
        (
            "Hello from the enclave\n",
            "attestation impossible: the EIF's init printed no PCRs (only eifbuild's init reads them for --attest)",
        ),
        (
            _lines((0, "locked", P0), (1, "locked", P1))
            + "eifbuild-init: attest: PCR2 error: the NSM answered X\n",
            "attestation failed: PCR2 not read: PCR2 error: the NSM answered X",
        ),
    ],
)
def test_no_pcrs_says_why(console: str, detail: str) -> None:
    result = compare(console, EIF)
    assert (result.ok, result.detail) == (False, detail)


def test_the_last_line_per_pcr_wins() -> None:
    read, problems = read_pcrs(_lines((0, "unlocked", "1" * 96), (0, "locked", P0)))
    assert (read[0].locked, read[0].value, problems) == (True, P0, [])
