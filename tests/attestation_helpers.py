"""Real attestation documents (tests/vectors/nitro-attestation/) and negative ones made from them at
test time: COSE parts taken apart and put back, payloads changed, and whole chains forged with
self-made keys (cryptography) under AWS's subject names."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

VECTORS = Path(__file__).parent / "vectors" / "nitro-attestation"
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))["docs"]
BY_FILE = {doc["file"]: doc for doc in INDEX}
ES384_HEADER = cbor2.dumps({1: -35})


def raw(name: str) -> bytes:
    """A real document's CBOR bytes."""
    return base64.b64decode((VECTORS / name).read_text(encoding="ascii"))


def made_at(name: str) -> datetime:
    return datetime.fromisoformat(BY_FILE[name]["timestamp"].replace("Z", "+00:00"))


def expected_pcrs(name: str) -> dict[int, str]:
    return {index: BY_FILE[name][f"pcr{index}"] for index in (0, 1, 2, 8)}


@dataclass
class Parts:
    """A COSE_Sign1 taken apart (the payload decoded with cbor2)."""

    protected: bytes
    unprotected: dict[object, object]
    payload: dict[str, object]
    signature: bytes

    def encode(self, *, payload: bytes | None = None, tag: int | None = None) -> bytes:
        body = payload if payload is not None else cbor2.dumps(self.payload)
        array = [self.protected, self.unprotected, body, self.signature]
        return cbor2.dumps(cbor2.CBORTag(tag, array) if tag is not None else array)


def parts(document: bytes) -> Parts:
    protected, unprotected, payload, signature = cbor2.loads(document)
    return Parts(protected, unprotected, cbor2.loads(payload), signature)


def sign(parts_: Parts, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The document with its payload signed by ``key`` (ES384 over the Sig_structure)."""
    payload = cbor2.dumps(parts_.payload)
    message = cbor2.dumps(["Signature1", parts_.protected, b"", payload])
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA384())))
    parts_.signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return parts_.encode(payload=payload)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _usage(*, ca: bool, digital_signature: bool = True, key_cert_sign: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=not ca, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca and key_cert_sign,
        crl_sign=ca, encipher_only=False, decipher_only=False,
    )  # fmt: skip


@dataclass
class Forged:
    """A forged chain: ``ders[0]`` the root … ``ders[-1]`` the leaf, ``key`` the leaf's key."""

    ders: list[bytes]
    key: ec.EllipticCurvePrivateKey

    @property
    def root(self) -> bytes:
        return self.ders[0]


def forge_chain(
    subjects: list[x509.Name],
    *,
    not_before: datetime,
    not_after: datetime,
    ca_key_cert_sign: bool = True,
    leaf_digital_signature: bool = True,
) -> Forged:
    """Certificates with these subjects (the first self-signed, each next issued by the one before,
    the last the leaf), valid from ``not_before`` to ``not_after``, all with self-made keys."""
    keys = [new_key() for _ in subjects]
    ders = []
    for i, subject in enumerate(subjects):
        leaf = i == len(subjects) - 1
        issuer = subjects[max(i - 1, 0)]
        usage = (
            _usage(ca=False, digital_signature=leaf_digital_signature)
            if leaf
            else _usage(ca=True, key_cert_sign=ca_key_cert_sign or i == 0)
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(keys[i].public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=not leaf, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(keys[max(i - 1, 0)], hashes.SHA384())
        )
        ders.append(cert.public_bytes(Encoding.DER))
    return Forged(ders, keys[-1])


def subjects_of(document: bytes) -> list[x509.Name]:
    """The subject names of a real document's chain, root first, leaf last."""
    payload = parts(document).payload
    ders = [*payload["cabundle"], payload["certificate"]]  # type: ignore[misc]
    return [x509.load_der_x509_certificate(der).subject for der in ders]


def forged_document(
    base: str,
    *,
    forged: Forged | None = None,
    changes: dict[str, object] | None = None,
    **forge_options: object,
) -> tuple[bytes, Forged]:
    """A real document's payload (with ``changes``), carried by a forged chain with AWS's subject
    names, valid for an hour around the document's time, and signed by the forged leaf."""
    document = raw(base)
    when = made_at(base)
    if forged is None:
        forged = forge_chain(
            subjects_of(document), not_before=when - timedelta(minutes=30),
            not_after=when + timedelta(minutes=30), **forge_options,  # type: ignore[arg-type]
        )  # fmt: skip
    taken = parts(document)
    taken.payload.update({"cabundle": forged.ders[:-1], "certificate": forged.ders[-1], **(changes or {})})
    return sign(taken, forged.key), forged


def emulator_document(*, nonce: bytes | None = None) -> bytes:
    """A document in the shape QEMU's virtio-nsm writes: alg -1, a zero signature, a zero
    certificate and cabundle, the locked PCRs only."""
    payload = {
        "module_id": "i-234-enc5678",
        "digest": "SHA384",
        "timestamp": int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()) * 1000,
        "pcrs": {index: bytes([index + 1]) * 48 for index in (0, 1, 2, 3, 4, 8)},
        "certificate": bytes(64),
        "cabundle": [bytes(64)],
        "public_key": None,
        "user_data": None,
        "nonce": nonce,
    }
    return cbor2.dumps([cbor2.dumps({1: -1}), {}, cbor2.dumps(payload), bytes(64)])
