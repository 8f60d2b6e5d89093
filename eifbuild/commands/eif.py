"""``pack``, ``describe``, ``verify``, ``pcrs`` and ``sign``: the EIF format commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..arch import parse_arch
from ..eif import EIF_BUILD_TOOL, EIF_BUILD_TOOL_VERSION, JsonValue, parse_algo
from ..eif import dumps as json_dumps
from ..errors import UsageError
from ..util import fsutil
from .common import EXIT_FAILED, EXIT_OK, Adder, add_algo

if TYPE_CHECKING:
    import argparse

    from ..eif import Measurements, Signer

# The library modules are imported by the handlers that use them: start-up time is part of every
# command's time (cryptography alone takes ~0.1 s to import).


def _both(name: str) -> list[str]:
    """``--name`` as eif_build spells it, then with ``_`` and ``-`` swapped: eif_build mixes both."""
    return list(dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}", f"--{name.replace('-', '_')}"]))


def _print_measurements(measurements: Measurements, pcrs_out: Path | None = None) -> None:
    value: dict[str, JsonValue] = {**measurements.to_json()}
    text = json_dumps(value, indent=2) + "\n"
    if pcrs_out is not None:
        with fsutil.atomic_write(pcrs_out) as fh:
            fh.write(text.encode("utf-8"))
    sys.stdout.write(text)


def _signer(certificate: Path | None, private_key: str | None) -> Signer | None:
    if certificate is None and private_key is None:
        return None
    if certificate is None or private_key is None:
        msg = "--signing-certificate and --private-key must be given together"
        raise UsageError(msg)
    from ..eif import open_signer  # noqa: PLC0415

    return open_signer(certificate, private_key)


KEY_HELP = "…and this key: an EC private key PEM file, an AWS KMS key ARN (arn:aws:kms:…) or a pkcs11: URI"


def _add_pack(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pack",
        help="write an EIF from a kernel, a cmdline and ramdisks (eif_build's flags)",
        description="Write an EIF byte-identical to AWS eif_build's for the same arguments and print its "
        "PCRs. Unlike eif_build, --version sets ImageVersion, --build-time is honoured with "
        "--kernel_config, the build time defaults to SOURCE_DATE_EPOCH (else 1970-01-01), and signing "
        "is deterministic.",
    )
    p.add_argument(*_both("kernel"), required=True, type=Path, metavar="FILE", help="bzImage or Image")
    p.add_argument(*_both("kernel_config"), type=Path, metavar="FILE", help="kernel .config: OS and version")
    p.add_argument(*_both("cmdline"), required=True, metavar="STRING", help="kernel command line, verbatim")
    p.add_argument(
        *_both("ramdisk"), dest="ramdisks", action="append", required=True, type=Path, metavar="FILE",
        help="initramfs (repeat; the first is measured into PCR1, the rest into PCR2)",
    )  # fmt: skip
    p.add_argument(*_both("output"), required=True, type=Path, metavar="FILE", help="EIF to write")
    p.add_argument(*_both("arch"), default="x86_64", help="x86_64 (default) or aarch64")
    p.add_argument(*_both("name"), help="ImageName (default: the kernel file's name)")
    p.add_argument(
        *_both("version"), dest="image_version", metavar="V", help="ImageVersion (default: --name)"
    )
    p.add_argument(*_both("metadata"), type=Path, metavar="JSON", help="CustomMetadata file (≤ 4096 bytes)")
    p.add_argument(
        *_both("build-time"),
        metavar="RFC3339",
        help="BuildTime: an RFC 3339 time with a UTC offset, kept verbatim (default: SOURCE_DATE_EPOCH)",
    )
    p.add_argument(*_both("build-tool"), default=EIF_BUILD_TOOL, metavar="NAME", help="BuildTool")
    p.add_argument(
        *_both("build-tool-version"), default=EIF_BUILD_TOOL_VERSION, metavar="V", help="BuildToolVersion"
    )
    p.add_argument(*_both("img-os"), metavar="NAME", help="OperatingSystem (default: --kernel_config's)")
    p.add_argument(*_both("img-kernel"), metavar="V", help="KernelVersion (default: --kernel_config's)")
    p.add_argument(*_both("signing-certificate"), type=Path, metavar="PEM", help="sign with this cert…")
    p.add_argument(*_both("private-key"), metavar="KEY", help=KEY_HELP)
    add_algo(p)
    p.add_argument(*_both("pcrs-out"), type=Path, metavar="FILE", help="also write the PCR JSON here")
    p.set_defaults(func=_cmd_pack)


def _cmd_pack(args: argparse.Namespace) -> int:
    from ..eif import (  # noqa: PLC0415
        PackRequest,
        load_custom_metadata,
        min_enclave_memory_mib,
        pack,
        parse_build_time,
    )

    arch = parse_arch(args.arch, where="--arch")
    build_time = None if args.build_time is None else parse_build_time(args.build_time, where="--build-time")
    signer = _signer(args.signing_certificate, args.private_key)
    request = PackRequest(
        output=args.output,
        kernel=args.kernel,
        cmdline=args.cmdline,
        ramdisks=args.ramdisks,
        arch=arch,
        name=args.name,
        version=args.image_version,
        build_time=build_time,
        build_tool=args.build_tool,
        build_tool_version=args.build_tool_version,
        operating_system=args.img_os,
        kernel_version=args.img_kernel,
        kernel_config=args.kernel_config,
        custom=load_custom_metadata(args.metadata) if args.metadata else None,
        signer=signer,
        algo=parse_algo(args.algo),
    )
    measurements = pack(request)
    size = args.output.stat().st_size
    memory = min_enclave_memory_mib(size)
    log.step(f"Output file: {args.output} ({size} bytes; run it with --memory {memory} or more)")
    _print_measurements(measurements, args.pcrs_out)
    return EXIT_OK


def _add_describe(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("describe", help="print an EIF's header, PCRs, signer and metadata (nitro-cli's JSON)")
    p.add_argument("eif", type=Path, metavar="FILE")
    add_algo(p)
    p.set_defaults(func=_cmd_describe)


def _cmd_describe(args: argparse.Namespace) -> int:
    from ..eif import describe  # noqa: PLC0415

    print(json_dumps(describe(args.eif, algo=parse_algo(args.algo)), indent=2))
    return EXIT_OK


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check an EIF's structure, CRC, signature and (optionally) PCRs",
        description="Exit 0 when the EIF is sound; otherwise print one line per problem and exit 1.",
    )
    p.add_argument("eif", type=Path, metavar="FILE")
    p.add_argument("--pcrs", type=Path, metavar="JSON", help="expected PCRs (JSON as pack prints them)")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..eif import load_expected_pcrs, verify  # noqa: PLC0415

    expected = load_expected_pcrs(args.pcrs) if args.pcrs else None
    problems = verify(args.eif, expected)
    for problem in problems:
        print(f"{args.eif}: {problem}")
    if problems:
        return EXIT_FAILED
    print(f"{args.eif}: OK")
    return EXIT_OK


def _add_pcrs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pcrs", help="print the PCRs of an existing EIF")
    p.add_argument("eif", type=Path, metavar="FILE")
    add_algo(p)
    p.add_argument(*_both("pcrs-out"), type=Path, metavar="FILE", help="also write the PCR JSON here")
    p.set_defaults(func=_cmd_pcrs)


def _cmd_pcrs(args: argparse.Namespace) -> int:
    from ..eif import measure  # noqa: PLC0415

    _print_measurements(measure(args.eif, parse_algo(args.algo)), args.pcrs_out)
    return EXIT_OK


def _add_sign(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign",
        help="sign an EIF, replacing any existing signature (or export/attach a detached signature)",
        description="Drop any signature section, append a new one and rewrite the header; PCR0/1/2 are "
        "unchanged. Writes FILE in place unless --output is given. A PEM key signs deterministically; "
        "KMS and PKCS#11 keys sign with randomized ECDSA (same PCRs, other bytes). Detached: "
        "--export-payload writes what to sign (and FILE.json naming the algorithm), --signature "
        "attaches a signature made elsewhere. A signature that does not verify is never written.",
    )
    p.add_argument("eif", type=Path, metavar="FILE")
    p.add_argument(
        *_both("signing-certificate"), "--certificate", dest="signing_certificate", type=Path, metavar="PEM",
        help="the signing certificate (with --export-payload: picks the curve, default P-384)",
    )  # fmt: skip
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(*_both("private-key"), metavar="KEY", help=KEY_HELP.removeprefix("…and "))
    how.add_argument("--signature", type=Path, metavar="SIG", help="attach this signature (DER or raw r||s)")
    how.add_argument("--export-payload", type=Path, metavar="OUT", help="write the bytes to sign to OUT")
    p.add_argument(*_both("output"), type=Path, metavar="FILE", help="write the signed EIF here instead")
    add_algo(p)
    p.add_argument(*_both("pcrs-out"), type=Path, metavar="FILE", help="also write the PCR JSON here")
    p.set_defaults(func=_cmd_sign)


def _cmd_sign(args: argparse.Namespace) -> int:
    from ..eif import DetachedSigner, export_payload, open_signer, sign_eif  # noqa: PLC0415

    algo = parse_algo(args.algo)
    if args.export_payload is not None:
        certificate = args.signing_certificate
        described = export_payload(args.eif, args.export_payload, certificate=certificate, algo=algo)
        log.step(f"Payload to sign: {args.export_payload}; its algorithm and digest: {described}")
        sys.stdout.write(described.read_text(encoding="utf-8"))
        return EXIT_OK
    if args.signing_certificate is None:
        msg = "signing needs the signing certificate"
        raise UsageError(msg, key="--signing-certificate")
    signer: Signer
    if args.signature is not None:
        signer = DetachedSigner.from_files(args.signing_certificate, args.signature)
    else:
        signer = open_signer(args.signing_certificate, args.private_key)
    measurements = sign_eif(args.eif, signer, output=args.output, algo=algo)
    _print_measurements(measurements, args.pcrs_out)
    return EXIT_OK


COMMANDS: list[Adder] = [_add_pack, _add_describe, _add_verify, _add_pcrs, _add_sign]
