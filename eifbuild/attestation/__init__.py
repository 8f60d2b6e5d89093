"""Verifying AWS Nitro Enclave attestation documents, offline, for the relying party.

:func:`verify` (in ``verifier``) applies four rules in order (structure, chain, signature, policy)
and returns the verified payload or raises :class:`~eifbuild.errors.AttestationError` with a
reason code; ``document`` reads and parses documents (``_cbor`` is its strict, bounded CBOR
decoder), ``chain`` checks the certificates against AWS's root (package data, pinned by SHA-256),
``expected`` turns the command line's words into expectations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .chain import AWS_ROOT_SHA256, aws_root_der, load_root
    from .document import (
        MAX_DOCUMENT_SIZE,
        MAX_INPUT_SIZE,
        AttestationDocument,
        document_bytes,
        parse_document,
        read_document,
    )
    from .expected import (
        load_pcr_file,
        merge_pcrs,
        parse_duration,
        parse_hex,
        parse_pcr_args,
        parse_time,
        read_public_key,
    )
    from .verifier import Verified, verify

EXPORTS = {
    "AWS_ROOT_SHA256": ".chain",
    "aws_root_der": ".chain",
    "load_root": ".chain",
    "MAX_DOCUMENT_SIZE": ".document",
    "MAX_INPUT_SIZE": ".document",
    "AttestationDocument": ".document",
    "document_bytes": ".document",
    "parse_document": ".document",
    "read_document": ".document",
    "load_pcr_file": ".expected",
    "merge_pcrs": ".expected",
    "parse_duration": ".expected",
    "parse_hex": ".expected",
    "parse_pcr_args": ".expected",
    "parse_time": ".expected",
    "read_public_key": ".expected",
    "Verified": ".verifier",
    "verify": ".verifier",
}

__all__ = [
    "AWS_ROOT_SHA256",
    "MAX_DOCUMENT_SIZE",
    "MAX_INPUT_SIZE",
    "AttestationDocument",
    "Verified",
    "aws_root_der",
    "document_bytes",
    "load_pcr_file",
    "load_root",
    "merge_pcrs",
    "parse_document",
    "parse_duration",
    "parse_hex",
    "parse_pcr_args",
    "parse_time",
    "read_document",
    "read_public_key",
    "verify",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
