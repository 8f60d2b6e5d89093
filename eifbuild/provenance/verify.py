"""``eifbuild provenance verify``: a provenance file's signature, its statement's shape and (with
the EIF) its subject digests and PCRs."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any

from ..errors import FileAccessError, ProvenanceError
from .dsse import verify_envelope
from .statement import byproduct_pcrs, check_statement

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric import ec


def read_provenance(path: Path, public_key: ec.EllipticCurvePublicKey | None) -> tuple[dict[str, Any], bool]:
    """The statement of ``path`` (a plain statement, or DSSE envelopes one a line) and whether a
    signature was checked; with ``public_key`` an envelope signed by it is required."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the provenance: {exc}"
        raise FileAccessError(msg, path=path) from None
    docs = _documents(text, path)
    envelopes = [d for d in docs if isinstance(d, dict) and "payloadType" in d]
    if not envelopes:
        if public_key is not None:
            msg = f"{path}: an unsigned statement, but a key was given"
            raise ProvenanceError(msg)
        return check_statement(docs[0]), False
    if public_key is None:
        return check_statement(_json(_payload(envelopes[0]), path)), False
    problems = []
    for envelope in envelopes:
        try:
            payload = verify_envelope(envelope, public_key)
        except ProvenanceError as exc:
            problems.append(str(exc))
            continue
        return check_statement(_json(payload, path)), True
    msg = f"{path}: {problems[0]}"
    raise ProvenanceError(msg)


def _documents(text: str, path: Path) -> list[Any]:
    """One JSON document (a plain statement), else one a line (DSSE envelopes, ``.intoto.jsonl``)."""
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    try:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        msg = f"{path}: not JSON, nor JSON lines"
        raise ProvenanceError(msg) from None
    if not docs:
        msg = f"{path}: empty"
        raise ProvenanceError(msg)
    return docs


def _json(payload: bytes, path: Path) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        msg = f"{path}: the envelope's payload is not JSON"
        raise ProvenanceError(msg) from None


def _payload(envelope: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(envelope["payload"], validate=True)
    except (KeyError, TypeError, ValueError):
        msg = "envelope: the payload is not base64"
        raise ProvenanceError(msg) from None


def check_eif(statement: dict[str, Any], eif: Path) -> None:
    """The EIF's sha256/sha384 are a subject's digests and its PCRs the statement's byproducts."""
    from ..eif import measure  # noqa: PLC0415

    digests = {"sha256": hashlib.sha256(), "sha384": hashlib.sha384()}
    try:
        with open(eif, "rb") as f:
            while chunk := f.read(1 << 20):
                for h in digests.values():
                    h.update(chunk)
    except OSError as exc:
        msg = f"cannot read the EIF: {exc.strerror}"
        raise FileAccessError(msg, path=eif) from None
    ours = {name: h.hexdigest() for name, h in digests.items()}
    subjects = [s["digest"] for s in statement["subject"]]
    if not any(s and all(ours.get(a) == v for a, v in s.items()) for s in subjects):
        msg = f"{eif}: its digests (sha256 {ours['sha256']}) are not the statement's subject"
        raise ProvenanceError(msg)
    measured = measure(eif).pcrs()
    recorded = byproduct_pcrs(statement)
    for name in sorted(set(measured) | set(recorded)):
        if measured.get(name) != recorded.get(name):
            msg = f"{eif}: {name} is {measured.get(name)}, the provenance records {recorded.get(name)}"
            raise ProvenanceError(msg)
