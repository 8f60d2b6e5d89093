"""``eifbuild.attestation.verify``: AWS-signed documents verify as of their own time with their own
PCRs; documents made from them at test time are each refused by the rule and reason that applies."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import cbor2
import pytest
from attestation_helpers import (
    BY_FILE,
    ES384_HEADER,
    INDEX,
    VECTORS,
    emulator_document,
    expected_pcrs,
    forge_chain,
    forged_document,
    made_at,
    parts,
    raw,
    subjects_of,
)

from eifbuild.attestation import AWS_ROOT_SHA256, aws_root_der, verify
from eifbuild.attestation._cbor import MAX_DEPTH
from eifbuild.errors import AttestationError, UsageError

DOCS = [doc["file"] for doc in INDEX]
DEBUG = {doc["file"] for doc in INDEX if doc["debug_zero_pcrs"]}
GOOD = "13.b64"  # nonce, user_data and public_key of 1024 bytes each


def _verify(document: bytes | str, base: str = GOOD, **options: object) -> object:
    options.setdefault("pcrs", expected_pcrs(base))
    options.setdefault("at", made_at(base) + timedelta(seconds=1))
    return verify(document, **options)  # type: ignore[arg-type]


def _refused(document: bytes | str, base: str = GOOD, **options: object) -> AttestationError:
    with pytest.raises(AttestationError) as caught:
        _verify(document, base, **options)
    assert "\n" not in str(caught.value)
    return caught.value


# -- the real documents ------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCS)
def test_each_real_document_verifies_as_of_its_own_time(name: str) -> None:
    verified = _verify(raw(name), name, allow_debug=name in DEBUG)
    doc = BY_FILE[name]
    assert verified.module_id == doc["module_id"]  # type: ignore[attr-defined]
    assert verified.document.timestamp_ms == doc["timestamp_ms"]  # type: ignore[attr-defined]
    assert verified.pcrs[0].hex() == doc["pcr0"]  # type: ignore[attr-defined]
    assert verified.checked[:3] == ("structure", "chain", "signature")  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(DEBUG))
def test_debug_mode_documents_are_refused_unless_allowed(name: str) -> None:
    assert _refused(raw(name), name).code == "policy.debug"
    # even with nothing but a nonce expected: debug mode is judged on its own
    assert _refused(raw(name), name, pcrs={}, user_data=b"x").code == "policy.debug"


def test_the_packaged_root_is_the_pinned_one_and_the_vectors_root() -> None:
    der = aws_root_der()
    assert hashlib.sha256(der).hexdigest() == AWS_ROOT_SHA256
    assert parts(raw(GOOD)).payload["cabundle"][0] == der  # type: ignore[index]


@pytest.mark.parametrize("encode", [
    lambda d: d,
    base64.b64encode,
    lambda d: base64.b64encode(d).decode() + "\n",
    lambda d: base64.urlsafe_b64encode(d).rstrip(b"="),
    lambda d: d.hex(),
    lambda d: d.hex().upper().encode(),
    lambda d: cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(d))),
])  # fmt: skip
def test_raw_base64_hex_and_tag_18_are_all_read(encode: object) -> None:
    _verify(encode(raw(GOOD)))  # type: ignore[operator]


def test_nonce_user_data_and_public_key_are_checked_when_given() -> None:
    taken = parts(raw(GOOD)).payload
    verified = _verify(
        raw(GOOD), nonce=taken["nonce"], user_data=taken["user_data"], public_key=taken["public_key"],
        max_age=timedelta(minutes=5),
    )  # fmt: skip
    assert verified.checked[-4:] == ("nonce", "user-data", "public-key", "max-age")  # type: ignore[attr-defined]


def test_any_pcr_index_can_be_expected() -> None:
    pcrs = {i: value.hex() for i, value in parts(raw(GOOD)).payload["pcrs"].items()}  # type: ignore[attr-defined]
    assert len(pcrs) == 16
    _verify(raw(GOOD), pcrs={3: pcrs[3], 4: pcrs[4]})


def test_nothing_expected_is_a_usage_error_not_a_pass() -> None:
    with pytest.raises(UsageError, match="nothing to verify against"):
        verify(raw(GOOD), at=made_at(GOOD))


# -- structure ---------------------------------------------------------------------------------


def _with_payload(**changes: object) -> bytes:
    taken = parts(raw(GOOD))
    taken.payload.update(changes)
    return taken.encode()


def _nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


STRUCTURE_CASES = {
    "another alg (ES256)": (lambda: _replace_protected(cbor2.dumps({1: -7})), "structure.alg"),
    "extra protected header": (lambda: _replace_protected(cbor2.dumps({1: -35, 4: b"k"})), "structure.protected"),
    "a tag other than 18": (lambda: parts(raw(GOOD)).encode(tag=98), "structure.tag"),
    "tag 18 twice": (lambda: cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, cbor2.loads(raw(GOOD))))), "structure.tag"),
    "trailing bytes": (lambda: raw(GOOD) + b"\x00", "structure.trailing"),
    "truncated": (lambda: raw(GOOD)[:-10], "structure.cbor"),
    "an array of 3": (lambda: cbor2.dumps(cbor2.loads(raw(GOOD))[:3]), "structure.cose"),
    "non-empty unprotected header": (lambda: _replace_unprotected({4: b"kid"}), "structure.unprotected"),
    "null module_id": (lambda: _with_payload(module_id=None), "structure.field"),
    "null cabundle": (lambda: _with_payload(cabundle=None), "structure.field"),
    "no certificate": (lambda: _without("certificate"), "structure.field"),
    "empty cabundle": (lambda: _with_payload(cabundle=[]), "structure.field"),
    "digest SHA256": (lambda: _with_payload(digest="SHA256"), "structure.field"),
    "2048-byte user_data": (lambda: _with_payload(user_data=b"u" * 2048), "structure.field"),
    "a 32-byte PCR": (lambda: _with_payload(pcrs={0: bytes(32), 1: bytes(48), 2: bytes(48)}), "structure.pcrs"),
    "PCR index 32": (lambda: _with_payload(pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48), 32: bytes(48)}), "structure.pcrs"),
    "a NitroTPM document": (lambda: _with_payload(nitrotpm_pcrs={0: bytes(48)}), "structure.nitrotpm"),
    "an indefinite-length array": (lambda: b"\x9f" + raw(GOOD)[1:] + b"\xff", "structure.cbor"),
    "nested too deep": (lambda: _nested(MAX_DEPTH + 1), "structure.depth"),
    "a 10 MB document": (lambda: b"\x84" + bytes(10 * 1024 * 1024), "structure.size"),
    "a 10 MB base64 text": (lambda: base64.b64encode(bytes(10 * 1024 * 1024)), "structure.size"),
    "neither CBOR nor base64 nor hex": (lambda: "not a document!", "structure.encoding"),
    "the emulator's unsigned shape": (emulator_document, "structure.emulator"),
}


def _replace_protected(header: bytes) -> bytes:
    taken = parts(raw(GOOD))
    taken.protected = header
    return taken.encode()


def _replace_unprotected(header: dict[object, object]) -> bytes:
    taken = parts(raw(GOOD))
    taken.unprotected = header
    return taken.encode()


def _without(field: str) -> bytes:
    taken = parts(raw(GOOD))
    del taken.payload[field]
    return taken.encode()


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_structure_refusals(case: str) -> None:
    make, code = STRUCTURE_CASES[case]
    assert _refused(make()).code == code


def test_a_deep_document_is_refused_without_recursing_into_it() -> None:
    assert _refused(_nested(60_000)).code == "structure.depth"  # under the size cap
    taken = parts(raw(GOOD))
    assert _refused(taken.encode(payload=_nested(60_000))).code == "structure.depth"  # in the payload


# -- chain -------------------------------------------------------------------------------------


def test_a_leaf_from_another_document_is_not_issued_by_this_chain() -> None:
    other_leaf = parts(raw("01.b64")).payload["certificate"]
    error = _refused(_with_payload(certificate=other_leaf))
    assert (error.code, error.rule) == ("chain.issuer", "chain")


def test_a_self_made_root_with_aws_subject_is_not_the_root() -> None:
    subjects = subjects_of(raw(GOOD))
    when = made_at(GOOD)
    fake_root = forge_chain(subjects[:1], not_before=when - timedelta(days=1), not_after=when + timedelta(days=1))
    taken = parts(raw(GOOD))
    taken.payload["cabundle"] = [fake_root.root, *taken.payload["cabundle"][1:]]  # type: ignore[misc]
    assert _refused(taken.encode()).code == "chain.root"


def test_a_whole_forged_chain_with_aws_names_is_refused_by_the_pin_alone() -> None:
    document, forged = forged_document(GOOD)
    assert _refused(document).code == "chain.root"
    # the same document verifies when its own root is trusted: only the pinned root stops it
    _verify(document, root=forged.root)


def test_a_ca_without_keycertsign_is_refused() -> None:
    document, forged = forged_document(GOOD, ca_key_cert_sign=False)
    assert _refused(document, root=forged.root).code == "chain.ca"


def test_a_leaf_without_digitalsignature_is_refused() -> None:
    document, forged = forged_document(GOOD, leaf_digital_signature=False)
    assert _refused(document, root=forged.root).code == "chain.leaf"


def test_expired_and_not_yet_valid() -> None:
    leaf_end = made_at(GOOD) + timedelta(hours=3)
    assert _refused(raw(GOOD), at=leaf_end + timedelta(seconds=2)).code == "chain.expired"
    assert _refused(raw(GOOD), at=made_at(GOOD) - timedelta(hours=1)).code == "chain.not-yet-valid"


def test_a_document_made_after_the_time_verified_as_of_is_refused() -> None:
    # the leaf is already valid (14:37:36) but the document is from 14:37:39.545
    assert _refused(raw(GOOD), at=made_at(GOOD) - timedelta(seconds=2)).code == "chain.future"


def test_a_timestamp_outside_the_leaf_validity_is_refused() -> None:
    later = int((made_at(GOOD) + timedelta(hours=2)).timestamp() * 1000)
    document, forged = forged_document(GOOD, changes={"timestamp": later})
    assert _refused(document, root=forged.root, at=made_at(GOOD) + timedelta(minutes=10)).code == "chain.timestamp"


# -- signature ---------------------------------------------------------------------------------


def test_one_payload_byte_changed_breaks_the_signature() -> None:
    taken = parts(raw(GOOD))
    payload = bytearray(cbor2.dumps(taken.payload))
    at = payload.index(b"i-0a22e5c5f24d22174")
    payload[at + 2] ^= 0x01  # "0" -> "1": still valid text, still a well-formed payload
    assert _refused(taken.encode(payload=bytes(payload))).code == "signature.invalid"


def test_a_changed_signature_does_not_verify() -> None:
    taken = parts(raw(GOOD))
    taken.signature = taken.signature[:-1] + bytes([taken.signature[-1] ^ 1])
    assert _refused(taken.encode()).code == "signature.invalid"


def test_a_signature_of_the_wrong_size_does_not_verify() -> None:
    taken = parts(raw(GOOD))
    taken.signature = taken.signature[:64]
    assert _refused(taken.encode()).code == "signature.invalid"


# -- policy ------------------------------------------------------------------------------------


def test_a_different_pcr_is_refused() -> None:
    pcrs = expected_pcrs(GOOD)
    pcrs[1] = "00" + pcrs[1][2:]
    error = _refused(raw(GOOD), pcrs=pcrs)
    assert error.code == "policy.pcr"
    assert "PCR1" in error.detail


def test_an_expected_pcr_the_document_lacks_is_refused() -> None:
    assert _refused(emulator_document(), pcrs={9: "11" * 48}, insecure_emulator=True).code == "policy.pcr"


@pytest.mark.parametrize(("option", "code"), [
    ("nonce", "policy.nonce"), ("user_data", "policy.user-data"), ("public_key", "policy.public-key"),
])  # fmt: skip
def test_wrong_nonce_user_data_or_public_key(option: str, code: str) -> None:
    assert _refused(raw(GOOD), **{option: b"\x01" * 1023 + b"\x02"}).code == code


def test_an_expected_nonce_on_a_document_without_one_is_refused() -> None:
    assert _refused(raw("01.b64"), "01.b64", nonce=b"n").code == "policy.nonce"


def test_max_age_counts_from_the_time_verified_as_of() -> None:
    at = made_at(GOOD) + timedelta(minutes=10)
    assert _refused(raw(GOOD), at=at, max_age=timedelta(minutes=5)).code == "policy.max-age"
    _verify(raw(GOOD), at=at, max_age=timedelta(minutes=15))


# -- QEMU's emulated NSM -----------------------------------------------------------------------


def test_the_emulator_shape_is_accepted_only_when_asked_and_says_so() -> None:
    error = _refused(emulator_document())
    assert error.code == "structure.emulator"
    assert "QEMU" in error.detail
    assert "--insecure-emulator" in error.detail
    pcrs = {0: "01" * 48, 3: "04" * 48}
    verified = verify(emulator_document(nonce=b"n"), pcrs=pcrs, nonce=b"n", insecure_emulator=True)
    assert verified.insecure_emulator
    assert verified.checked == ("structure", "PCR0", "PCR3", "nonce")
    # the policy still applies
    with pytest.raises(AttestationError, match=r"^policy\.nonce"):
        verify(emulator_document(nonce=b"n"), pcrs=pcrs, nonce=b"m", insecure_emulator=True)


def test_the_vectors_are_the_committed_ones() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.b64")) == DOCS
    assert parts(raw(GOOD)).protected == ES384_HEADER
