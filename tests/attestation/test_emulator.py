"""QEMU's emulated NSM: a real document it wrote (tests/vectors/qemu-nsm) is refused by default,
verified only with ``insecure_emulator`` (chain and signature skipped, the policy kept), and only
in exactly QEMU's shape; a signed document is checked in full even then."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from attestation_helpers import EMULATOR_INDEX, emulator_raw, expected_pcrs, made_at, parts, raw

from eifbuild.attestation import parse_document, verify
from eifbuild.errors import AttestationError

NONCE = bytes.fromhex(EMULATOR_INDEX["nonce"])
PCRS = {int(name[3:]): value for name, value in EMULATOR_INDEX["pcrs"].items()}
SIGNED = "13.b64"  # a real AWS document


def _made_at() -> datetime:
    return parse_document(emulator_raw(), emulator_allowed=True).timestamp


def _refused(document: bytes, **options: object) -> AttestationError:
    options.setdefault("pcrs", PCRS)
    options.setdefault("nonce", NONCE)
    with pytest.raises(AttestationError) as caught:
        verify(document, **options)  # type: ignore[arg-type]
    return caught.value


def test_the_vector_is_qemu_s_shape() -> None:
    taken = parts(emulator_raw())
    assert (taken.protected, taken.unprotected, taken.signature) == (bytes.fromhex("a10120"), {}, bytes(64))
    payload = taken.payload
    assert (payload["certificate"], payload["cabundle"]) == (bytes(64), [bytes(64)])  # type: ignore[index]
    assert sorted(payload["pcrs"]) == EMULATOR_INDEX["locked_pcrs"]  # type: ignore[index]
    document = parse_document(emulator_raw(), emulator_allowed=True)
    assert (document.emulated, document.module_id, document.nonce) == (True, "eifbuild-boot", NONCE)
    assert document.timestamp_ms == EMULATOR_INDEX["timestamp_ms"]  # a 64-bit integer in the CBOR


def test_refused_by_default_with_a_reason_that_says_why() -> None:
    error = _refused(emulator_raw())
    assert error.code == "structure.emulator"
    assert error.detail == (
        "alg -1, a zero signature, a zero certificate and a zero cabundle: an unsigned document from "
        "QEMU's emulated NSM, which proves nothing (accepted only with --insecure-emulator)"
    )


def test_verified_with_insecure_emulator_and_the_policy_still_applies() -> None:
    verified = verify(emulator_raw(), pcrs=PCRS, nonce=NONCE, insecure_emulator=True)
    assert verified.insecure_emulator
    assert verified.checked == ("structure", "PCR0", "PCR1", "PCR2", "nonce")
    other_nonce = bytes(32)
    assert _refused(emulator_raw(), nonce=other_nonce, insecure_emulator=True).code == "policy.nonce"
    other_pcrs = {**PCRS, 1: "00" * 48}
    assert _refused(emulator_raw(), pcrs=other_pcrs, insecure_emulator=True).code == "policy.pcr"
    too_old = _made_at() + timedelta(minutes=10)
    error = _refused(emulator_raw(), insecure_emulator=True, at=too_old, max_age=timedelta(minutes=5))
    assert error.code == "policy.max-age"


def _changed(*, signature: bytes | None = None, **payload: object) -> bytes:
    taken = parts(emulator_raw())
    if signature is not None:
        taken.signature = signature
    taken.payload = {**taken.payload, **payload}
    return taken.encode()


@pytest.mark.parametrize(
    ("document", "what"),
    [
        (lambda: _changed(signature=b"\x01" + bytes(63)), "the signature"),
        (lambda: _changed(signature=bytes(96)), "the signature"),
        (lambda: _changed(certificate=b"\x30" + bytes(63)), "the certificate"),
        (lambda: _changed(cabundle=[bytes(64), bytes(64)]), "the cabundle"),
        (lambda: _changed(cabundle=[raw(SIGNED)[:64]]), "the cabundle"),
    ],
)
def test_alg_minus_1_in_another_shape_is_refused_even_with_insecure_emulator(
    document: object, what: str
) -> None:
    error = _refused(document(), insecure_emulator=True)  # type: ignore[operator]
    assert error.code == "structure.emulator"
    assert error.detail.startswith(f"alg -1 (unsigned) but {what} not 64 zero bytes: not the shape QEMU's")
    assert error.detail.endswith("refused even with --insecure-emulator")


def test_a_signed_document_is_checked_in_full_even_with_insecure_emulator() -> None:
    at = made_at(SIGNED) + timedelta(seconds=1)
    verified = verify(raw(SIGNED), pcrs=expected_pcrs(SIGNED), at=at, insecure_emulator=True)
    assert verified.checked[:3] == ("structure", "chain", "signature")
    assert not verified.insecure_emulator
    late = made_at(SIGNED) + timedelta(days=1)  # the leaf (3 hours) has expired: the chain is judged
    with pytest.raises(AttestationError, match=r"^chain\.expired"):
        verify(raw(SIGNED), pcrs=expected_pcrs(SIGNED), at=late, insecure_emulator=True)
