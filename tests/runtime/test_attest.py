"""``boot --attest``: reading init's PCR lines and judging them against the EIF's measurements;
reading the attestation document init printed and verifying it with the EIF's PCRs and the nonce."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from attestation_helpers import EMULATOR_INDEX, emulator_raw

from eifbuild.cli import main
from eifbuild.eif import Measurements
from eifbuild.runtime._attest import (
    append_words,
    check_document,
    compare,
    new_nonce,
    read_document,
    read_pcrs,
)
from eifbuild.runtime._console import _Watch

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


# -- the attestation document ----------------------------------------------------------------------
DOC = emulator_raw()
DOC_NONCE = bytes.fromhex(EMULATOR_INDEX["nonce"])
DOC_EIF = Measurements("sha384", *(EMULATOR_INDEX["pcrs"][f"PCR{i}"] for i in (0, 1, 2)))


def _document_lines(data: bytes, per_line: int = 384) -> list[str]:
    """As init prints them: base64 in numbered lines of at most 384 characters."""
    text = base64.b64encode(data).decode()
    chunks = [text[i : i + per_line] for i in range(0, len(text), per_line)]
    return [f"eifbuild-init: attest: document {k}/{len(chunks)} {c}" for k, c in enumerate(chunks, 1)]


def test_the_nonce_is_fresh_and_goes_beside_the_attest_flag() -> None:
    first, second = new_nonce(), new_nonce()
    assert len(first) == 32
    assert first != second
    assert re.fullmatch(r"eifbuild\.attest=1 eifbuild\.nonce=[0-9a-f]{64}", append_words(first))


def test_the_document_is_read_back_from_its_lines() -> None:
    lines = _document_lines(DOC)
    assert len(lines) == 5  # the vector is 1172 bytes
    assert read_document(["[    1.2] noise", *lines, "Hello"]) == (DOC, "")


def test_the_first_complete_document_wins_and_forged_later_lines_change_nothing() -> None:
    forged = _document_lines(b"\x84" + bytes(40), per_line=8)
    assert read_document([*_document_lines(DOC), *forged])[0] == DOC
    first, *rest = _document_lines(DOC)
    assert read_document([first, "eifbuild-init: attest: document 9/9 AAAA", *rest])[0] == DOC


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "eifbuild's init printed no attestation document"),
        (_document_lines(DOC)[:-1], "the attestation document is incomplete (4 of 5 lines)"),
        (
            ["eifbuild-init: attest: document error: the NSM answered InvalidOperation"],
            "the guest could not get a document: the NSM answered InvalidOperation",
        ),
        (["eifbuild-init: attest: document 1/1 AAA"], "the attestation document's lines are not base64"),
    ],
)
def test_a_missing_document_says_why(lines: list[str], problem: str) -> None:
    assert read_document(lines) == (None, problem)
    result = check_document(None, problem, DOC_EIF, DOC_NONCE)
    assert (result.ok, result.detail) == (False, f"attestation document missing: {problem}")


def test_the_document_is_verified_with_the_eif_s_pcrs_and_the_nonce() -> None:
    result = check_document(DOC, "", DOC_EIF, DOC_NONCE)
    assert (result.ok, result.detail) == (
        True,
        "document verified (PCR0, PCR1, PCR2, nonce; chain and signature not checked: QEMU's NSM does not sign)",
    )
    other_nonce = check_document(DOC, "", DOC_EIF, bytes(32))
    assert not other_nonce.ok
    assert other_nonce.detail.startswith("attestation document not verified: policy.nonce: nonce is 43272ded")
    other_eif = check_document(DOC, "", Measurements("sha384", P0, P1, P2), DOC_NONCE)
    assert other_eif.detail.startswith("attestation document not verified: policy.pcr: PCR0 is 689f7798")


def test_the_console_watcher_keeps_attest_lines_out_of_the_tail() -> None:
    watch = _Watch(None)
    lines = _document_lines(DOC)
    text = "\r\n".join(["eifbuild-init: attest: PCR0 locked " + P0, *lines]) + "\n"
    for start in range(0, len(text), 100):  # lines split across reads
        watch.feed(text[start : start + 100].replace("\r", ""))
    watch.feed("app output\n" * 30000)  # pushes them out of the 64 KiB tail
    watch.collect("eifbuild-init: attest: document error: last line without a newline")
    watch.collect("\n")
    assert "attest" not in watch.text
    assert watch.attest_lines[0] == f"eifbuild-init: attest: PCR0 locked {P0}"
    assert read_document(watch.attest_lines) == (DOC, "")
    assert watch.attest_lines[-1].endswith("last line without a newline")


def test_attestation_out_needs_attest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "att.cbor"
    assert main(["boot", str(tmp_path / "app.eif"), "--attestation-out", str(out)]) == 2
    assert "--attestation-out saves the document --attest asks for: add --attest" in capsys.readouterr().err
    assert not out.exists()
