"""Detached signing: export exactly what must be signed, sign it wherever the key is, attach it.

``export_payload`` writes the COSE Sig_structure over the EIF's PCR0 (the bytes an ECDSA signer
hashes and signs) and, beside it as ``FILE.json``, the algorithm and the digest for signers that
take a digest. :class:`DetachedSigner` hands such a signature (ASN.1 DER or raw r‖s) to the signing
path every signer takes, which verifies it before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..errors import SigningError
from ..util import fsutil
from ..util.cbor import sig_structure
from ._cose import (
    COSE_ALGORITHMS,
    CoseAlgorithm,
    pcr_payload,
    protected_header,
    signature_valid,
)
from .pcr import DEFAULT_ALGO, HashAlgo
from .reader import measure
from .sign import load_signing_certificate, read_file

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from .metadata import JsonValue
    from .sign import SigningCertificate

PAYLOAD_FORMAT: Final = "eifbuild-detached-payload/1"
DEFAULT_CURVE: Final = "secp384r1"  # AWS's examples and KMS keys for enclaves use P-384
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


@dataclass(frozen=True)
class DetachedPayload:
    """The Sig_structure over ``pcr0`` for ``curve``'s COSE algorithm."""

    pcr0: bytes
    curve: str

    @property
    def algorithm(self) -> CoseAlgorithm:
        return COSE_ALGORITHMS[self.curve]

    @property
    def message(self) -> bytes:
        return sig_structure(protected_header(self.algorithm), pcr_payload(self.pcr0))

    def description(self, payload_file: str, pcr_algo: HashAlgo) -> dict[str, JsonValue]:
        hash_name = self.algorithm.hash_name
        return {
            "format": PAYLOAD_FORMAT,
            "payload": payload_file,
            "payload_is": "the COSE Sig_structure (RFC 8152 section 4.4) to sign with ECDSA as it is",
            "cose_algorithm": self.algorithm.name,
            "curve": _CURVE_NAMES[self.curve],
            "hash": hash_name,
            f"payload_{hash_name}": hashlib.new(hash_name, self.message).hexdigest(),
            "pcr_algo": pcr_algo,
            "pcr0": self.pcr0.hex(),
            "signature_formats": ["ASN.1 DER ECDSA-Sig-Value", "raw r||s"],
        }


def export_payload(
    eif: Path,
    out: Path,
    *,
    certificate: Path | None = None,
    algo: HashAlgo = DEFAULT_ALGO,
    now: datetime | None = None,
) -> Path:
    """Write ``eif``'s payload to ``out`` and its description to ``out`` + ``.json`` (returned).

    The COSE algorithm follows ``certificate``'s curve; without one it is ES384 (P-384).
    """
    curve = DEFAULT_CURVE
    if certificate is not None:
        curve = load_signing_certificate(certificate, now).public_key.curve.name
    payload = DetachedPayload(bytes.fromhex(measure(eif, algo).pcr0), curve)
    described = out.with_name(out.name + ".json")
    with fsutil.atomic_write(out) as fh:
        fh.write(payload.message)
    with fsutil.atomic_write(described) as fh:
        fh.write((json.dumps(payload.description(out.name, algo), indent=2) + "\n").encode("utf-8"))
    return described


@dataclass(frozen=True)
class DetachedSigner:
    """A signature made elsewhere, for ``certificate``'s key; ``name`` is where it was read from."""

    certificate: SigningCertificate
    name: str
    signature: bytes
    deterministic: bool = True

    @classmethod
    def from_files(cls, certificate: Path, signature: Path, *, now: datetime | None = None) -> DetachedSigner:
        loaded = load_signing_certificate(certificate, now)
        return cls(loaded, str(signature), read_file(signature, "signature"))

    def sign(self, message: bytes) -> bytes:
        """The attached signature as r‖s, if it is one of ``message`` by the certificate's key."""
        algorithm = self.certificate.algorithm
        for raw in _raw_candidates(self.signature, algorithm):
            if signature_valid(self.certificate.public_key, algorithm, message, raw):
                return raw
        msg = (
            f"{self.name}: not an {algorithm.name} signature of this EIF's payload by the key of "
            f"{self.certificate.source} (was it made over another EIF's payload?); nothing was written"
        )
        raise SigningError(msg)


def _raw_candidates(signature: bytes, algorithm: CoseAlgorithm) -> list[bytes]:
    """The r‖s forms ``signature`` may be: DER decoded, and the bytes themselves if r‖s-sized."""
    found = []
    size = algorithm.size
    try:
        r, s = decode_dss_signature(signature)
        if max(r, s).bit_length() <= 8 * size:
            found.append(r.to_bytes(size, "big") + s.to_bytes(size, "big"))
    except ValueError:
        pass
    if len(signature) == 2 * size:
        found.append(signature)
    return found
