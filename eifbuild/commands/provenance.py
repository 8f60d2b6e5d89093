"""``provenance verify`` (a build's in-toto/SLSA provenance, signed or not) and ``kms-policy`` (the
KMS key-policy statement for an EIF's PCRs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FileAccessError, ProvenanceError
from .common import EXIT_FAILED, EXIT_OK, Adder

if TYPE_CHECKING:
    import argparse

    from cryptography.hazmat.primitives.asymmetric import ec

_VERIFY = (
    "Verify a provenance file that 'doit eif' wrote (build/NAME-ARCH.intoto.jsonl, DSSE envelopes "
    "one a line; or the plain statement, build/NAME-ARCH.intoto.json): with --key or --certificate "
    "the envelope's signature, always the statement's shape (in-toto Statement v1, SLSA provenance "
    "v1), and with --eif that the EIF's sha256 and sha384 are the subject and its PCRs the "
    "byproducts. Exit 0 verified; 1 not verified (one line says why); 2 cannot run."
)
_KMS = (
    "Print the AWS KMS key-policy statement that lets only an enclave with these PCRs use the key, "
    "as AWS documents for Nitro Enclaves: StringEqualsIgnoreCase on "
    "kms:RecipientAttestation:ImageSha384 (PCR0) and kms:RecipientAttestation:PCR1, PCR2 and (a "
    "signed EIF) PCR8. Add it to the key policy's Statement list."
)


def _add_provenance(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("provenance", help="verify a build's provenance (in-toto, SLSA v1, DSSE)")
    actions = p.add_subparsers(dest="provenance_action", required=True, metavar="ACTION")
    v = actions.add_parser("verify", help="verify a provenance file", description=_VERIFY)
    v.add_argument("file", type=Path, metavar="FILE", help="NAME-ARCH.intoto.jsonl (or .intoto.json)")
    v.add_argument("--eif", type=Path, metavar="EIF", help="the EIF the provenance must describe")
    keys = v.add_mutually_exclusive_group()
    keys.add_argument("--key", type=Path, metavar="PUB", help="the signer's PEM public key")
    keys.add_argument("--certificate", type=Path, metavar="PEM", help="the signer's PEM certificate")
    v.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .. import provenance  # noqa: PLC0415 - cryptography only when verifying

    public_key = _public_key(args)
    try:
        statement, signed = provenance.read_provenance(args.file, public_key)
        if args.eif is not None:
            provenance.check_eif(statement, args.eif)
    except ProvenanceError as exc:
        print(f"not verified: {exc}")
        return EXIT_FAILED
    checked = ["signature"] if signed else []
    checked += ["statement"] + (["EIF digests", "PCRs"] if args.eif is not None else [])
    subject = statement["subject"][0]
    digest = subject["digest"].get("sha256", "?")
    print(f"verified: {subject.get('name', '?')} sha256:{digest}; checked: {', '.join(checked)}")
    if not signed:
        print("unsigned: nothing proves who wrote this statement (give --key or --certificate)")
    return EXIT_OK


def _public_key(args: argparse.Namespace) -> ec.EllipticCurvePublicKey | None:
    """``--key`` or ``--certificate``'s public key, if one is given."""
    from .. import provenance  # noqa: PLC0415

    source = args.key or args.certificate
    if source is None:
        return None
    try:
        data = source.read_bytes()
    except OSError as exc:
        msg = f"cannot read the {'public key' if args.key else 'certificate'}: {exc.strerror}"
        raise FileAccessError(msg, path=source) from None
    return provenance.load_public_key(data, certificate=args.certificate is not None, source=str(source))


def _add_kms_policy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kms-policy", help="print the KMS key-policy statement for an EIF's PCRs", description=_KMS
    )
    p.add_argument("pcrs", type=Path, metavar="PCR_JSON", help="build/NAME-ARCH.pcr.json")
    p.add_argument("--principal", metavar="ARN", help="the role or user the enclave's parent runs as")
    p.add_argument(
        "--actions", default="kms:Decrypt", metavar="LIST",
        help="comma-separated KMS actions (default kms:Decrypt; e.g. kms:Decrypt,kms:GenerateDataKey)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_kms_policy)


def _cmd_kms_policy(args: argparse.Namespace) -> int:
    from .. import attestation, provenance  # noqa: PLC0415
    from ..errors import UsageError  # noqa: PLC0415

    pcrs = {f"PCR{i}": value for i, value in attestation.load_pcr_file(args.pcrs).items()}
    if "PCR0" not in pcrs:
        msg = f"{args.pcrs}: no PCR0"
        raise UsageError(msg, key="pcrs")
    actions = [a.strip() for a in args.actions.split(",") if a.strip()]
    if not actions or not all(a.startswith("kms:") for a in actions):
        msg = f"expected KMS actions like kms:Decrypt, got {args.actions!r}"
        raise UsageError(msg, key="--actions")
    statement = provenance.kms_policy_statement(pcrs, principal=args.principal, actions=actions)
    print(json.dumps(statement, indent=2))
    return EXIT_OK


_REPRODUCE = (
    "Rebuild the EIF a provenance file describes from this checkout, from scratch in a fresh store "
    "and another directory (as 'doit check' does), and compare the EIF's sha256 and every PCR with "
    "the provenance's (PCRs only for a KMS/PKCS#11-signed EIF, whose signature bytes are "
    "randomized). Refused in one line when the checkout's commit or the eif.toml's digest is not the "
    "provenance's. Exit 0 reproduced; 1 a difference, or a signature that does not verify; 2 cannot run."
)


def _add_reproduce(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reproduce", help="rebuild what a provenance file describes and compare", description=_REPRODUCE
    )
    p.add_argument("file", type=Path, metavar="FILE", help="NAME-ARCH.intoto.jsonl (or .intoto.json)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument(
        "--key", type=Path, metavar="PUB", help="check the envelope's signature with this PEM public key"
    )
    keys.add_argument("--certificate", type=Path, metavar="PEM", help="… or with this PEM certificate's key")
    p.add_argument(
        "-C", "--directory", type=Path, default=Path(), metavar="DIR", help="the checkout (default .)"
    )
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .. import provenance  # noqa: PLC0415
    from ..plan import reproduce  # noqa: PLC0415

    try:
        statement, _ = provenance.read_provenance(args.file, _public_key(args))
    except ProvenanceError as exc:
        print(f"not verified: {exc}")
        return EXIT_FAILED
    report = reproduce(statement, args.directory.absolute())
    print(report.text)
    return EXIT_OK if report.ok else EXIT_FAILED


COMMANDS: list[Adder] = [_add_provenance, _add_kms_policy, _add_reproduce]
