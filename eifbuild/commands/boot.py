"""``boot`` (run an EIF under QEMU) and ``kernel`` (build a kernel from a recipe, or lint a config)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..arch import parse_arch
from ..errors import UsageError
from ..util import fsutil
from .common import EXIT_FAILED, EXIT_OK, STORE_HELP, Adder, store_of
from .kernellint import cmd_kernel_lint, print_build_lint

if TYPE_CHECKING:
    import argparse


def _add_boot(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "boot",
        help="boot an EIF under QEMU and watch its serial console",
        description="Boot FILE.eif with QEMU (TCG), stream its console, and stop at --expect TEXT "
        "(exit 0), a kernel panic or --timeout (exit 1). Without --expect, success is the machine "
        "shutting down by itself after the command exited 0. x86_64 EIFs boot on QEMU's nitro-enclave "
        "machine when the QEMU has it (the EIF file itself, measured by QEMU; eifbuild answers the "
        "vsock heartbeat), else unpacked on microvm.",
    )
    p.add_argument("eif", type=Path, metavar="FILE.eif")
    p.add_argument("--expect", metavar="TEXT", help="succeed as soon as TEXT appears on the console")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="give up after (default 60)"
    )
    p.add_argument(
        "--local-init",
        action="store_true",
        help="boot with eifbuild's own init instead of the EIF's (keeps its nsm.ko)",
    )
    p.add_argument(
        "--machine",
        help="QEMU machine: nitro-enclave (default where available), microvm, pc, q35 (x86_64); virt",
    )
    p.add_argument(
        "--qemu", metavar="PATH", help="the QEMU binary (default: $EIFBUILD_QEMU_X86_64/_AARCH64, else PATH)"
    )
    p.add_argument(
        "--attest",
        action="store_true",
        help="nitro-enclave: eifbuild's init reads PCR0/1/2/8 from /dev/nsm and an attestation document "
        "with a fresh nonce; PASS only if the PCRs equal the EIF's and the document verifies",
    )
    p.add_argument(
        "--attestation-out",
        type=Path,
        metavar="FILE",
        help="with --attest: save the attestation document (raw CBOR) to FILE and print its nonce",
    )
    p.add_argument(
        "--vsock-forward",
        action="append",
        default=[],
        metavar="PORT=tcp:HOST:PORT|PORT=unix:PATH",
        help="nitro-enclave: forward the guest's connections to the parent (CID 3) on PORT; repeatable",
    )
    p.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="[HOSTADDR:]HOSTPORT:ENCLAVEPORT",
        help="nitro-enclave: listen on HOSTADDR:HOSTPORT (default 127.0.0.1) and connect each "
        "connection to the enclave's vsock port ENCLAVEPORT (as docker run -p); repeatable",
    )
    p.add_argument(
        "--memory",
        type=int,
        metavar="MIB",
        help="guest RAM (default: max(256, 4 x EIF size, EIF + its ramdisks unpacked + 96))",
    )
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="QEMU accelerator (default tcg)")
    p.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)
    p.set_defaults(func=_cmd_boot)


def _cmd_boot(args: argparse.Namespace) -> int:
    from ..runtime import BootOptions, boot_eif  # noqa: PLC0415

    if args.attestation_out is not None and not args.attest:
        msg = "--attestation-out saves the document --attest asks for: add --attest"
        raise UsageError(msg, key="--attestation-out")
    options = BootOptions(
        expect=args.expect,
        timeout=args.timeout,
        local_init=args.local_init,
        machine=args.machine,
        memory_mib=args.memory,
        accel=args.accel,
        qemu=args.qemu,
        attest=args.attest,
        vsock_forwards=tuple(args.vsock_forward),
        publishes=tuple(args.publish),
    )
    store = store_of(args)
    shown = []

    def show(text: str) -> None:
        shown.append(text[-1:])
        sys.stdout.write(text)
        sys.stdout.flush()

    result = boot_eif(args.eif, options, store=store, console=None if args.quiet else show)
    if shown and shown[-1] != "\n":
        sys.stdout.write("\n")
    if result.nonce is not None:
        print(f"attest: nonce {result.nonce.hex()}")
    if args.attestation_out is not None:
        _save_document(args.attestation_out, result.document)
    print(result.verdict)
    return EXIT_OK if result.ok else EXIT_FAILED


def _save_document(path: Path, document: bytes | None) -> None:
    if document is None:
        print(f"attest: no attestation document to save to {path}")
        return
    with fsutil.atomic_write(path) as fh:
        fh.write(document)
    print(f"attest: document saved to {path} ({len(document)} bytes)")


def _add_kernel(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kernel",
        help="build a recipe's kernel from source, reproducibly (minutes per arch); or lint a config",
        usage="%(prog)s [-h] RECIPE.toml [--arch ARCH] [--source TARBALL] [--output DIR] [--check] "
        "[-j N] [--cache DIR]\n       %(prog)s lint CONFIG [--arch ARCH] [--waive CONFIG_NAME] [--app KINDS]",
        description="Build the kernel a recipe's [defaults.kernel_build] describes, through the "
        "store, and lint its config (errors stop the build). Needs clang, lld, llvm, make, flex, "
        "bison, bc and libelf-dev. `kernel lint CONFIG` checks a .config for what an enclave kernel "
        "needs (errors: exit 1) and what widens its attack surface (warnings: exit 0); with --app, "
        "also what those kinds of app need (warnings naming them).",
    )
    p.add_argument("recipe", type=Path, metavar="RECIPE.toml", help="the recipe to build, or `lint`")
    p.add_argument("config", type=Path, nargs="?", metavar="CONFIG", help="with lint: the .config to check")
    p.add_argument(
        "--arch",
        action="append",
        help="x86_64 or aarch64; repeatable (default: the recipe's; lint: the config's)",
    )
    p.add_argument("--waive", action="append", metavar="CONFIG_NAME", help="with lint: accept this warning")
    p.add_argument(
        "--app",
        action="append",
        metavar="KINDS",
        help="with lint: check what these kinds of app need, comma-separated: script, glibc, python, "
        "node, jvm, go, dotnet, network, database, ipc, sandbox, or all",
    )
    p.add_argument(
        "--source", type=Path, metavar="TARBALL", help="this kernel source tarball instead of the recipe's"
    )
    p.add_argument(
        "--output", type=Path, metavar="DIR", help="copy <arch>/<image>, <image>.config and modules here"
    )
    p.add_argument(
        "--check", action="store_true", help="fail unless the image has the sha256 the recipe pins"
    )
    p.add_argument("-j", "--jobs", type=int, help="parallel make jobs (default: CPU count)")
    p.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)
    p.set_defaults(func=_cmd_kernel)


def _cmd_kernel(args: argparse.Namespace) -> int:
    from ..plan import build_from_recipe  # noqa: PLC0415
    from ..sources import load_recipe  # noqa: PLC0415

    if args.recipe == Path("lint"):
        return cmd_kernel_lint(args)
    for value, flag in ((args.config, "CONFIG"), (args.waive, "--waive"), (args.app, "--app")):
        if value is not None:
            msg = f"{flag} only applies to kernel lint (a recipe waives warnings in its kernel_build)"
            raise UsageError(msg, key=flag)
    if args.arch:
        arches = tuple(parse_arch(a, where="--arch") for a in args.arch)
    else:
        arches = load_recipe(args.recipe).arches
    store = store_of(args)
    status = EXIT_OK
    for arch in arches:
        built = build_from_recipe(args.recipe, arch, store=store, tarball=args.source, jobs=args.jobs)
        image = built.build.image
        if args.output is not None:
            for src in (image, built.build.config, *built.build.modules.values()):
                dest = args.output / arch / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with fsutil.atomic_write(dest) as fh:
                    fh.write(src.read_bytes())
        print(f"{built.build.image_sha256}  {arch}/{image.name}")
        for name, module in built.build.modules.items():
            print(f"{fsutil.hash_file(module)}  {arch}/{name}")
        print_build_lint(built.lint, f"{arch}/{image.name}")
        if args.check and built.matches is not True:
            pinned = built.expected_sha256 or "nothing"
            print(f"MISMATCH: {arch}/{image.name}: the recipe pins {pinned}", file=sys.stderr)
            status = EXIT_FAILED
    return status


COMMANDS: list[Adder] = [_add_boot, _add_kernel]
