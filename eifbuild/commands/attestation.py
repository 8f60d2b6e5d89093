"""``attestation verify``: check an attestation document against what the relying party expects."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AttestationError, FileAccessError, ProvenanceError, UsageError
from .common import EXIT_FAILED, EXIT_OK, Adder

if TYPE_CHECKING:
    import argparse

_DESCRIPTION = (
    "Verify a Nitro Enclave attestation document (raw CBOR, base64 or hex; FILE or - for stdin) "
    "offline, by four rules in order: structure, chain (to AWS's root G1, shipped with eifbuild), "
    "signature (ES384), policy (the expected PCRs, no debug mode, nonce, user data, public key, "
    "max age). Exit 0 verified; 1 not verified, with one line naming the rule and reason; 2 cannot "
    "run (unreadable file, bad arguments, nothing expected)."
)


def _add_attestation(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("attestation", help="verify an enclave's attestation document (offline)")
    actions = p.add_subparsers(dest="attestation_action", required=True, metavar="ACTION")
    v = actions.add_parser("verify", help="verify an attestation document", description=_DESCRIPTION)
    v.add_argument("document", metavar="DOC", help="the document: a file, or - for stdin")
    v.add_argument("--pcrs", type=Path, metavar="JSON", help="expected PCR0/1/2 (and PCR8) from a PCR file")
    v.add_argument(
        "--pcr", action="append", default=[], metavar="N=HEX",
        help="an expected PCR, any index (PCR3: IAM role, PCR4: instance ID; repeat)",
    )  # fmt: skip
    v.add_argument(
        "--provenance", type=Path, metavar="FILE",
        help="expected PCRs from a signed provenance file (NAME-ARCH.intoto.jsonl), checked with --key",
    )  # fmt: skip
    v.add_argument("--key", type=Path, metavar="PUB", help="the provenance signer's PEM public key")
    v.add_argument("--nonce", metavar="HEX", help="the nonce the document must carry")
    v.add_argument("--user-data", metavar="HEX", help="the user data the document must carry")
    v.add_argument(
        "--public-key", type=Path, metavar="FILE",
        help="the public key the document must carry: the file's bytes (a PEM public key: its DER)",
    )  # fmt: skip
    v.add_argument("--max-age", metavar="DURATION", help="refuse a document older than this (90s, 5m, 1h30m)")
    v.add_argument("--at", metavar="TIME", help="verify as of this RFC 3339 time (default: now)")
    v.add_argument("--allow-debug", action="store_true", help="accept an enclave in debug mode (zero PCRs)")
    v.add_argument("--root", type=Path, metavar="PEM", help="trust this root instead of AWS's (tests)")
    v.add_argument(
        "--insecure-emulator", action="store_true",
        help="accept QEMU's unsigned documents (alg -1, zeros): skips their chain and signature rules "
        "(proves nothing); a signed document is still checked in full",
    )  # fmt: skip
    v.add_argument("--json", action="store_true", help="print the verified payload (or the refusal) as JSON")
    v.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .. import attestation as att  # noqa: PLC0415 - cryptography only when verifying

    pcrs = att.merge_pcrs(att.load_pcr_file(args.pcrs) if args.pcrs else {}, att.parse_pcr_args(args.pcr))
    if args.provenance is not None:
        pcrs = att.merge_pcrs(_provenance_pcrs(args.provenance, args.key), pcrs)
    elif args.key is not None:
        msg = "--key checks a provenance file's signature: give --provenance too"
        raise UsageError(msg, key="--key")
    nonce = None if args.nonce is None else att.parse_hex(args.nonce, key="--nonce")
    user_data = None if args.user_data is None else att.parse_hex(args.user_data, key="--user-data")
    public_key = None if args.public_key is None else att.read_public_key(args.public_key)
    max_age = None if args.max_age is None else att.parse_duration(args.max_age)
    at = None if args.at is None else att.parse_time(args.at)
    root = None if args.root is None else att.load_root(args.root)
    data = att.read_document(args.document)
    try:
        verified = att.verify(
            data, pcrs=pcrs, nonce=nonce, user_data=user_data, public_key=public_key,
            max_age=max_age, at=at, allow_debug=args.allow_debug, root=root,
            insecure_emulator=args.insecure_emulator,
        )  # fmt: skip
    except AttestationError as exc:
        if args.json:
            print(json.dumps({"verified": False, "reason": exc.code, "detail": exc.detail}))
        else:
            print(f"not verified: {exc}")
        return EXIT_FAILED
    if verified.insecure_emulator:
        print("warning: --insecure-emulator: the chain and signature were NOT checked", file=sys.stderr)
    if args.json:
        print(json.dumps(verified.to_json(), indent=2))
        return EXIT_OK
    document = verified.document
    made = document.to_json()["timestamp"]
    print(f"verified: {document.module_id}, made {made}; checked: {', '.join(verified.checked)}")
    if verified.insecure_emulator:
        print("insecure: chain and signature skipped (--insecure-emulator): this proves nothing")
    return EXIT_OK


def _provenance_pcrs(path: Path, key: Path | None) -> dict[int, str]:
    """The PCRs a provenance file records, once its signature by ``key`` is verified."""
    from .. import provenance  # noqa: PLC0415

    if key is None:
        msg = "an unsigned provenance proves nothing: give the signer's public key with --key"
        raise UsageError(msg, key="--provenance")
    try:
        data = key.read_bytes()
    except OSError as exc:
        msg = f"cannot read the public key: {exc.strerror}"
        raise FileAccessError(msg, path=key) from None
    public_key = provenance.load_public_key(data, certificate=False, source=str(key))
    try:
        statement, _ = provenance.read_provenance(path, public_key)
    except ProvenanceError as exc:
        msg = f"provenance not verified: {exc}"
        raise UsageError(msg, key="--provenance") from None
    recorded = provenance.byproduct_pcrs(statement)
    return {int(name.removeprefix("PCR")): value for name, value in recorded.items()}


COMMANDS: list[Adder] = [_add_attestation]
