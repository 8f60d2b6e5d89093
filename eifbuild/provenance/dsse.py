"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, v1) around provenance statements.

Signed with any :class:`~eifbuild.eif.Signer` (a PEM key with deterministic ECDSA, KMS, PKCS#11):
the signature is ECDSA over the PAE with the certificate's hash, DER-encoded (as DSSE's ECDSA
signers write it); ``keyid`` is the sha256 of the key's SubjectPublicKeyInfo (DER), in hex.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import ProvenanceError
from .statement import PAYLOAD_TYPE

if TYPE_CHECKING:
    from ..eif import Signer

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def sign_envelope(payload: bytes, signer: Signer) -> dict[str, Any]:
    """A DSSE envelope of ``payload`` (an in-toto statement) signed by ``signer``."""
    raw = signer.sign(pae(PAYLOAD_TYPE, payload))
    half = len(raw) // 2
    der = encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": key_id(signer.certificate.public_key), "sig": base64.b64encode(der).decode()}
        ],
    }


def envelope_line(envelope: dict[str, Any]) -> bytes:
    """One line of an ``.intoto.jsonl`` file."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def verify_envelope(envelope: Any, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The payload of ``envelope`` if one of its signatures is ``public_key``'s, else ProvenanceError."""
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
        msg = f"envelope: not a DSSE envelope with payloadType {PAYLOAD_TYPE}"
        raise ProvenanceError(msg)
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (KeyError, TypeError, binascii.Error):
        msg = "envelope: payload or signatures are not base64"
        raise ProvenanceError(msg) from None
    algorithm = _HASHES.get(public_key.curve.name)
    if algorithm is None:
        msg = f"envelope: unsupported key curve {public_key.curve.name}"
        raise ProvenanceError(msg)
    message = pae(PAYLOAD_TYPE, payload)
    for signature in signatures:
        try:
            public_key.verify(signature, message, ec.ECDSA(algorithm()))
        except (InvalidSignature, ValueError):
            continue
        return payload
    msg = f"envelope: no signature by key {key_id(public_key)[:16]}… verifies"
    raise ProvenanceError(msg)


def load_public_key(data: bytes, *, certificate: bool, source: str) -> ec.EllipticCurvePublicKey:
    """The EC public key of a PEM public key or (``certificate``) a PEM certificate."""
    from cryptography import x509  # noqa: PLC0415

    try:
        key = (
            x509.load_pem_x509_certificate(data).public_key()
            if certificate
            else (serialization.load_pem_public_key(data))
        )
    except ValueError:
        what = "certificate" if certificate else "public key"
        msg = f"{source}: not a PEM {what}"
        raise ProvenanceError(msg) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        msg = f"{source}: not an EC public key"
        raise ProvenanceError(msg)
    return key
