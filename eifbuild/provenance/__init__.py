"""Provenance: the in-toto statement (SLSA provenance v1) of an EIF, its DSSE envelope, verifying
both, and the KMS key-policy statement for an EIF's PCRs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .dsse import envelope_line, key_id, load_public_key, pae, sign_envelope, verify_envelope
    from .kmspolicy import DEFAULT_ACTIONS, kms_policy_statement
    from .statement import (
        BUILD_TYPE,
        PAYLOAD_TYPE,
        PREDICATE_TYPE,
        STATEMENT_TYPE,
        BuildFacts,
        Dependency,
        build_statement,
        byproduct_pcrs,
        check_statement,
        statement_bytes,
    )
    from .verify import check_eif, read_provenance

EXPORTS = {
    "envelope_line": ".dsse",
    "key_id": ".dsse",
    "load_public_key": ".dsse",
    "pae": ".dsse",
    "sign_envelope": ".dsse",
    "verify_envelope": ".dsse",
    "DEFAULT_ACTIONS": ".kmspolicy",
    "kms_policy_statement": ".kmspolicy",
    "BUILD_TYPE": ".statement",
    "PAYLOAD_TYPE": ".statement",
    "PREDICATE_TYPE": ".statement",
    "STATEMENT_TYPE": ".statement",
    "BuildFacts": ".statement",
    "Dependency": ".statement",
    "build_statement": ".statement",
    "byproduct_pcrs": ".statement",
    "check_statement": ".statement",
    "statement_bytes": ".statement",
    "check_eif": ".verify",
    "read_provenance": ".verify",
}

__all__ = [
    "BUILD_TYPE",
    "DEFAULT_ACTIONS",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "BuildFacts",
    "Dependency",
    "build_statement",
    "byproduct_pcrs",
    "check_eif",
    "check_statement",
    "envelope_line",
    "key_id",
    "kms_policy_statement",
    "load_public_key",
    "pae",
    "read_provenance",
    "sign_envelope",
    "statement_bytes",
    "verify_envelope",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
