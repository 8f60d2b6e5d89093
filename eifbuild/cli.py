"""Command-line interface: argument parsing and the error boundary, nothing else.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares it and sets ``func`` to a
``_cmd_<name>(args) -> int`` handler that calls the library and prints the result on stdout.

Exit codes: 0 success; 1 a check ran and failed (verify, boot, check); 2 bad input or usage
(``error: <one line>`` on stderr, never a traceback unless ``-v -v``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, fsutil, log, toolchain
from . import oci as oci_images
from .arch import parse_arch
from .eif import (
    Measurements,
    Signer,
    describe,
    load_custom_metadata,
    load_expected_pcrs,
    make_metadata,
    measure,
    min_enclave_memory_mib,
    sign_eif,
    verify,
    write_eif,
)
from .errors import ConfigError, EifbuildError
from .metadata import EIF_BUILD_TOOL, EIF_BUILD_TOOL_VERSION, JsonValue
from .metadata import dumps as json_dumps
from .pcr import HASH_ALGOS, parse_algo
from .store import Store

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eifbuild",
        description="Build AWS Nitro Enclave images (EIF) reproducibly from pinned inputs.",
    )
    parser.add_argument("--version", action="version", version=f"eifbuild {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (-vv: tracebacks)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only results and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def _add_compile(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compile",
        help="cross-compile C into a static binary with zig, through the store",
        description="Compile C sources (.h files listed are copied beside them) into a static musl "
        "executable for --arch with the zig of the ziglang package; cached in the store by content.",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="C sources and headers")
    p.add_argument("--arch", required=True, help="x86_64 (amd64) or aarch64 (arm64)")
    p.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT", help="where to write the binary"
    )
    p.add_argument(
        "--cflags",
        action="append",
        default=[],
        metavar="FLAGS",
        help="extra compiler flags, split like a shell would; repeatable (write --cflags='-Wall -Wextra')",
    )
    p.add_argument(
        "--cache", type=Path, metavar="DIR", help="store directory (default: $EIFBUILD_CACHE, else ./cache)"
    )
    p.set_defaults(func=_cmd_compile)


def _cmd_compile(args: argparse.Namespace) -> int:
    arch = parse_arch(args.arch, where="--arch")
    cflags = [flag for group in args.cflags for flag in shlex.split(group)]
    store = Store(args.cache) if args.cache else Store.for_project(Path.cwd())
    binary = toolchain.compile_to(store, args.sources, args.output, arch=arch, cflags=cflags)
    print(f"{binary.sha256}  {args.output}")
    return EXIT_OK


_COMMANDS.append(_add_compile)


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


def _signer(certificate: Path | None, private_key: Path | None) -> Signer | None:
    if certificate is None and private_key is None:
        return None
    if certificate is None or private_key is None:
        msg = "--signing-certificate and --private-key must be given together"
        raise ConfigError(msg)
    return Signer.from_files(certificate, private_key)


def _add_algo(p: argparse.ArgumentParser) -> None:
    p.add_argument(*_both("algo"), default="sha384", choices=HASH_ALGOS, help="PCR hash (default sha384)")


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
    p.add_argument(*_both("build-time"), metavar="RFC3339", help="BuildTime (default: SOURCE_DATE_EPOCH)")
    p.add_argument(*_both("build-tool"), default=EIF_BUILD_TOOL, metavar="NAME", help="BuildTool")
    p.add_argument(
        *_both("build-tool-version"), default=EIF_BUILD_TOOL_VERSION, metavar="V", help="BuildToolVersion"
    )
    p.add_argument(*_both("img-os"), metavar="NAME", help="OperatingSystem (default: --kernel_config's)")
    p.add_argument(*_both("img-kernel"), metavar="V", help="KernelVersion (default: --kernel_config's)")
    p.add_argument(*_both("signing-certificate"), type=Path, metavar="PEM", help="sign with this cert…")
    p.add_argument(*_both("private-key"), type=Path, metavar="PEM", help="…and this EC private key")
    _add_algo(p)
    p.add_argument(*_both("pcrs-out"), type=Path, metavar="FILE", help="also write the PCR JSON here")
    p.set_defaults(func=_cmd_pack)


def _cmd_pack(args: argparse.Namespace) -> int:
    arch = parse_arch(args.arch, where="--arch")
    signer = _signer(args.signing_certificate, args.private_key)
    metadata = make_metadata(
        kernel=args.kernel,
        name=args.name,
        version=args.image_version,
        build_time=args.build_time,
        build_tool=args.build_tool,
        build_tool_version=args.build_tool_version,
        operating_system=args.img_os,
        kernel_version=args.img_kernel,
        kernel_config=args.kernel_config,
        custom=load_custom_metadata(args.metadata) if args.metadata else None,
    )
    measurements = write_eif(
        args.output,
        kernel=args.kernel,
        cmdline=args.cmdline,
        ramdisks=args.ramdisks,
        metadata=metadata,
        arch=arch,
        signer=signer,
        algo=parse_algo(args.algo),
    )
    size = args.output.stat().st_size
    memory = min_enclave_memory_mib(size)
    log.step(f"Output file: {args.output} ({size} bytes; run it with --memory {memory} or more)")
    _print_measurements(measurements, args.pcrs_out)
    return EXIT_OK


def _add_describe(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("describe", help="print an EIF's header, PCRs, signer and metadata (nitro-cli's JSON)")
    p.add_argument("eif", type=Path, metavar="FILE")
    _add_algo(p)
    p.set_defaults(func=_cmd_describe)


def _cmd_describe(args: argparse.Namespace) -> int:
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
    _add_algo(p)
    p.add_argument(*_both("pcrs-out"), type=Path, metavar="FILE", help="also write the PCR JSON here")
    p.set_defaults(func=_cmd_pcrs)


def _cmd_pcrs(args: argparse.Namespace) -> int:
    _print_measurements(measure(args.eif, parse_algo(args.algo)), args.pcrs_out)
    return EXIT_OK


def _add_sign(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign",
        help="sign an EIF, replacing any existing signature",
        description="Drop any signature section, append a new one (deterministic ECDSA) and rewrite the "
        "header; PCR0/1/2 are unchanged. Writes FILE in place unless --output is given.",
    )
    p.add_argument("eif", type=Path, metavar="FILE")
    p.add_argument(*_both("signing-certificate"), required=True, type=Path, metavar="PEM")
    p.add_argument(*_both("private-key"), required=True, type=Path, metavar="PEM")
    p.add_argument(*_both("output"), type=Path, metavar="FILE", help="write the signed EIF here instead")
    _add_algo(p)
    p.add_argument(*_both("pcrs-out"), type=Path, metavar="FILE", help="also write the PCR JSON here")
    p.set_defaults(func=_cmd_sign)


def _cmd_sign(args: argparse.Namespace) -> int:
    signer = Signer.from_files(args.signing_certificate, args.private_key)
    measurements = sign_eif(args.eif, signer, output=args.output, algo=parse_algo(args.algo))
    _print_measurements(measurements, args.pcrs_out)
    return EXIT_OK


_COMMANDS.extend([_add_pack, _add_describe, _add_verify, _add_pcrs, _add_sign])


def _host_arch() -> str:
    import platform  # noqa: PLC0415 - only for this default

    machine = platform.machine().lower()
    return machine if machine in ("x86_64", "amd64", "aarch64", "arm64") else "x86_64"


def _add_oci(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "oci",
        help="inspect or unpack an OCI image (layout, archive, docker save, registry)",
        description="REF is an OCI layout dir or archive (PATH, PATH:TAG, PATH@sha256:…), a docker save "
        "tar, or a registry image (host/repo@sha256:…; a tag is resolved here, builds need a digest). "
        "Blobs are verified and cached in the store.",
    )
    actions = p.add_subparsers(dest="oci_command", metavar="ACTION", required=True)
    inspect = actions.add_parser("inspect", help="print digests, platform, layers, cmd and env")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=_cmd_oci_inspect)
    unpack = actions.add_parser("unpack", help="write the merged rootfs into a new directory")
    unpack.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="new or empty dir")
    unpack.set_defaults(func=_cmd_oci_unpack)
    for action in (inspect, unpack):
        action.add_argument("ref", metavar="REF", help="the image")
        action.add_argument("--arch", default=_host_arch(), help="x86_64 or aarch64 (default: this host's)")
        action.add_argument("--cache", type=Path, metavar="DIR", help=_STORE_HELP)


def _oci_image(args: argparse.Namespace) -> tuple[oci_images.OciImage, Store]:
    arch = parse_arch(args.arch, where="--arch")
    store = _store_of(args)
    image = oci_images.resolve_image(args.ref, arch=arch, store=store, project_dir=Path.cwd(), allow_tag=True)
    return image, store


def _cmd_oci_inspect(args: argparse.Namespace) -> int:
    image, _ = _oci_image(args)
    info = image.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for key in ("ref", "source", "platform", "index", "manifest", "config", "rootfs"):
        if info[key]:
            print(f"{key + ':':<13}{info[key]}")
    for layer in image.layers:
        size = "?" if layer.size is None else str(layer.size)
        print(f"{'layer:':<13}{layer.digest}  {size} bytes  {layer.media_type}")
    parts = f"Entrypoint {json.dumps(list(image.entrypoint))} + Cmd {json.dumps(list(image.cmd))}"
    print(f"{'argv:':<13}{json.dumps(list(image.argv))}  ({parts})")
    for line in image.env:
        print(f"{'env:':<13}{line}")
    for note in image.unsupported:
        print(f"{'unsupported:':<13}{note}")
    return EXIT_OK


def _cmd_oci_unpack(args: argparse.Namespace) -> int:
    image, store = _oci_image(args)
    count = oci_images.unpack_image(image, store, args.output)
    print(f"{count} paths of {image.manifest_digest} ({image.platform}) written to {args.output}")
    return EXIT_OK


_COMMANDS.append(_add_oci)


# -- boot and kernel -----------------------------------------------------------------------------
def _add_boot(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "boot",
        help="boot an EIF under QEMU and watch its serial console",
        description="Boot FILE.eif with QEMU (TCG), stream its console, and stop at --expect TEXT "
        "(exit 0), a kernel panic or --timeout (exit 1). Without --expect, success is the machine "
        "shutting down by itself after the command exited 0.",
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
    p.add_argument("--machine", help="QEMU machine: microvm (default), pc or q35 on x86_64; virt on aarch64")
    p.add_argument("--memory", type=int, metavar="MIB", help="guest RAM (default: max(256, 4 x EIF size))")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="QEMU accelerator (default tcg)")
    p.add_argument(
        "--cache", type=Path, metavar="DIR", help="store directory (default: $EIFBUILD_CACHE, else ./cache)"
    )
    p.set_defaults(func=_cmd_boot)


def _cmd_boot(args: argparse.Namespace) -> int:
    from . import boot as booting  # noqa: PLC0415

    options = booting.BootOptions(
        expect=args.expect,
        timeout=args.timeout,
        local_init=args.local_init,
        machine=args.machine,
        memory_mib=args.memory,
        accel=args.accel,
    )
    store = Store(args.cache) if args.cache else Store.for_project(Path.cwd())
    shown = []

    def show(text: str) -> None:
        shown.append(text[-1:])
        sys.stdout.write(text)
        sys.stdout.flush()

    result = booting.boot(args.eif, options, store=store, console=None if args.quiet else show)
    if shown and shown[-1] != "\n":
        sys.stdout.write("\n")
    print(result.verdict)
    return EXIT_OK if result.ok else EXIT_FAILED


def _add_kernel(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kernel",
        help="build a recipe's kernel from source, reproducibly (minutes per arch)",
        description="Build the kernel a recipe's [defaults.kernel_build] describes, through the "
        "store. Needs clang, lld, llvm, make, flex, bison, bc and libelf-dev.",
    )
    p.add_argument("recipe", type=Path, metavar="RECIPE.toml")
    p.add_argument("--arch", action="append", help="x86_64 or aarch64; repeatable (default: the recipe's)")
    p.add_argument(
        "--source", type=Path, metavar="TARBALL", help="this kernel source tarball instead of the recipe's"
    )
    p.add_argument("--output", type=Path, metavar="DIR", help="copy <arch>/<image> and <image>.config here")
    p.add_argument(
        "--check", action="store_true", help="fail unless the image has the sha256 the recipe pins"
    )
    p.add_argument("-j", "--jobs", type=int, help="parallel make jobs (default: CPU count)")
    p.add_argument(
        "--cache", type=Path, metavar="DIR", help="store directory (default: $EIFBUILD_CACHE, else ./cache)"
    )
    p.set_defaults(func=_cmd_kernel)


def _cmd_kernel(args: argparse.Namespace) -> int:
    from .kernelrecipe import build_from_recipe  # noqa: PLC0415
    from .recipe import load_recipe  # noqa: PLC0415

    if args.arch:
        arches = tuple(parse_arch(a, where="--arch") for a in args.arch)
    else:
        arches = load_recipe(args.recipe).arches
    store = Store(args.cache) if args.cache else Store.for_project(Path.cwd())
    status = EXIT_OK
    for arch in arches:
        built = build_from_recipe(args.recipe, arch, store=store, tarball=args.source, jobs=args.jobs)
        image = built.build.image
        if args.output is not None:
            for src in (image, built.build.config):
                dest = args.output / arch / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with fsutil.atomic_write(dest) as fh:
                    fh.write(src.read_bytes())
        print(f"{built.build.image_sha256}  {arch}/{image.name}")
        if args.check and built.matches is not True:
            pinned = built.expected_sha256 or "nothing"
            print(f"MISMATCH: {arch}/{image.name}: the recipe pins {pinned}", file=sys.stderr)
            status = EXIT_FAILED
    return status


_COMMANDS.extend([_add_boot, _add_kernel])


# -- sources, lock file and store ----------------------------------------------------------------
_STORE_HELP = "store directory (default: $EIFBUILD_CACHE, else cache/ next to eif.toml)"


def _store_of(args: argparse.Namespace) -> Store:
    return Store(args.cache) if args.cache else Store.for_cwd()


def _lock_path(args: argparse.Namespace) -> Path:
    from .lockfile import DEFAULT_LOCK_FILE  # noqa: PLC0415
    from .store import find_project_dir  # noqa: PLC0415

    if args.lock_file:
        return Path(args.lock_file)
    found = find_project_dir() / DEFAULT_LOCK_FILE
    cwd = Path.cwd()
    return found.relative_to(cwd) if found.is_relative_to(cwd) else found


def _add_fetch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch",
        help="fetch and verify every source of a recipe into the store",
        description="Download (or find in the shared cache) every source of RECIPE.toml, check its "
        "pins and publish it in the store. Prints 'name sha256 store-path' per source.",
    )
    p.add_argument("recipe", type=Path, metavar="RECIPE.toml")
    p.add_argument("--arch", action="append", help="only this arch's sources; repeatable (default: all)")
    p.add_argument("--lock-file", type=Path, metavar="FILE", help="default: eif.lock next to eif.toml")
    p.add_argument("--cache", type=Path, metavar="DIR", help=_STORE_HELP)
    p.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .lockfile import Lock  # noqa: PLC0415
    from .sources import fetch_all, load_recipe  # noqa: PLC0415

    arches = [parse_arch(a, where="--arch") for a in args.arch] if args.arch else None
    recipe = load_recipe(args.recipe)
    lock = Lock.load(_lock_path(args))
    for got in fetch_all(recipe, store=_store_of(args), arches=arches, lock=lock):
        print(f"{got.source.qualified_name} {got.sha256} {got.path}")
    return EXIT_OK


def _add_lock(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lock",
        help="check every source is pinned; record pins for unpinned ones in eif.lock",
        description="Check that every source of the recipes is pinned, by its recipe or by the lock "
        "file. With --trust-on-first-use, download each unpinned source once and record its sha256 "
        "and size in the lock file (check the printed hashes against a copy you trust).",
    )
    p.add_argument(
        "recipes", nargs="*", type=Path, metavar="RECIPE.toml", help="default: the recipes of ./eif.toml"
    )
    p.add_argument("--lock-file", type=Path, metavar="FILE", help="default: eif.lock next to eif.toml")
    p.add_argument(
        "--trust-on-first-use", action="store_true", help="download unpinned sources and record their hashes"
    )
    p.set_defaults(func=_cmd_lock)


def _cmd_lock(args: argparse.Namespace) -> int:
    from .lockfile import lock_sources  # noqa: PLC0415

    recipes = args.recipes
    lock_path = _lock_path(args)
    if not recipes:
        from .config import load_project  # noqa: PLC0415
        from .store import find_project_dir  # noqa: PLC0415

        project = load_project(find_project_dir() / "eif.toml")
        recipes = list(project.recipes)
        lock_path = args.lock_file or project.lock_file
    results = lock_sources(recipes, lock_path, trust_on_first_use=args.trust_on_first_use)
    for r in results:
        detail = f" {r.sha256} {r.size} {r.source.origin}" if r.sha256 else ""
        print(f"{r.status:<6} {r.source.recipe}/{r.source.qualified_name}{detail}")
    if any(r.status == "new" for r in results):
        print(f"wrote {lock_path}")
    return EXIT_OK


def _add_store(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="list, verify or clean the content-addressed store")
    actions = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="list entries: key, kind, size, creation time, label")
    ls.set_defaults(func=_cmd_store_ls)
    verify = actions.add_parser("verify", help="re-hash every entry; exit 1 if any is corrupt")
    verify.add_argument("--repair", action="store_true", help="remove corrupt entries (rebuilt on next use)")
    verify.set_defaults(func=_cmd_store_verify)
    gc = actions.add_parser("gc", help="remove entries no project's last build used")
    gc.add_argument(
        "--keep-days", type=float, default=7.0, metavar="N", help="keep younger entries (default 7)"
    )
    gc.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    gc.set_defaults(func=_cmd_store_gc)
    for action in (ls, verify, gc):
        action.add_argument("--cache", type=Path, metavar="DIR", help=_STORE_HELP)


def _cmd_store_ls(args: argparse.Namespace) -> int:
    for entry in _store_of(args).entries():
        label = entry.meta.get("source") or ""
        print(f"{entry.key}  {entry.kind:<10} {entry.size:>12}  {entry.created}  {label}".rstrip())
    return EXIT_OK


def _cmd_store_verify(args: argparse.Namespace) -> int:
    store = _store_of(args)
    checked = len(list(store.keys()))
    problems = store.verify(repair=args.repair)
    for problem in problems:
        print(f"{problem.key}: {problem.message}")
    corrupt = len({p.key for p in problems})
    action = " (removed)" if args.repair and corrupt else ""
    print(f"{checked} entries checked, {corrupt} corrupt{action}")
    return EXIT_FAILED if problems else EXIT_OK


def _cmd_store_gc(args: argparse.Namespace) -> int:
    store = _store_of(args)
    sizes = {e.key: e.size for e in store.entries()}
    removed = store.gc(keep_days=args.keep_days, dry_run=args.dry_run)
    for key in removed:
        print(key)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} entries ({sum(sizes.get(k, 0) for k in removed)} bytes)")
    return EXIT_OK


_COMMANDS.extend([_add_fetch, _add_lock, _add_store])


# -- ramdisk -------------------------------------------------------------------------------------
def _add_ramdisk(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ramdisk",
        help="pack a directory or a Nitro ramdisk layout into a canonical newc cpio archive",
        description="Write TREE, the bootstrap layout (--sys) or the app layout (--app) as a canonical "
        "newc cpio archive: the bytes GNU cpio writes for the normalised tree, whatever the host, "
        "umask or mtimes. --list FILE prints the members of an archive (plain or gzip).",
    )
    p.add_argument("tree", nargs="?", type=Path, metavar="TREE", help="directory to pack as is")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--sys", action="store_true", help="bootstrap layout: dev/, init, nsm.ko")
    layout.add_argument("--app", action="store_true", help="app layout: cmd, env and rootfs/")
    layout.add_argument("--list", type=Path, metavar="FILE", help="list FILE's members like cpio -tv")
    p.add_argument("--init", type=Path, metavar="FILE", help="--sys: the init executable")
    p.add_argument("--nsm", type=Path, metavar="FILE", help="--sys: the NSM kernel module (optional)")
    p.add_argument("--rootfs", type=Path, metavar="DIR", help="--app: the app's root filesystem")
    p.add_argument(
        "--cmd", action="append", metavar="ARG", help="--app: one argv entry; repeat (--cmd=-x for a dash)"
    )
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="--app: one variable; repeatable")
    p.add_argument("-o", "--output", type=Path, metavar="OUT", help="archive to write")
    p.add_argument(
        "--mtime", type=int, metavar="N", help="mtime of every entry (default: $SOURCE_DATE_EPOCH or 0)"
    )
    p.add_argument(
        "--modes",
        choices=("normalize", "preserve"),
        default="normalize",
        help="normalize (default): dirs 0755, files 0755/0644; preserve: keep permission bits",
    )
    p.add_argument("--gzip", action="store_true", help="deterministic gzip, zero-padded to 4 bytes")
    p.set_defaults(func=_cmd_ramdisk)


def _ramdisk_misuse(args: argparse.Namespace) -> str | None:
    mode = "--list" if args.list else "--sys" if args.sys else "--app" if args.app else "TREE"
    allowed = {
        "--list": set(),
        "--sys": {"--init", "--nsm", "-o", "--mtime", "--gzip"},
        "--app": {"--rootfs", "--cmd", "--env", "-o", "--mtime", "--modes", "--gzip"},
        "TREE": {"TREE", "-o", "--mtime", "--modes", "--gzip"},
    }[mode]
    given = {
        "TREE": args.tree, "--init": args.init, "--nsm": args.nsm, "--rootfs": args.rootfs,
        "--cmd": args.cmd, "--env": args.env, "-o": args.output, "--mtime": args.mtime,
        "--modes": args.modes != "normalize" or None, "--gzip": args.gzip or None,
    }  # fmt: skip
    for option, value in given.items():
        if value is not None and option not in allowed:
            return f"ramdisk: {option} cannot be used with {mode}"
    required = {
        "--list": [],
        "--sys": ["--init", "-o"],
        "--app": ["--rootfs", "--cmd", "-o"],
        "TREE": ["TREE", "-o"],
    }
    missing = [option for option in required[mode] if given.get(option) is None]
    return f"ramdisk: {mode} needs {' and '.join(missing)}" if missing else None


def _cmd_ramdisk(args: argparse.Namespace) -> int:
    from . import ramdisk  # noqa: PLC0415
    from .cpio import Compression, eif_alignment, write_cpio_file  # noqa: PLC0415

    if (problem := _ramdisk_misuse(args)) is not None:
        raise ConfigError(problem)
    if args.list is not None:
        for line in ramdisk.list_archive(args.list):
            print(line)
        return EXIT_OK
    if args.sys:
        entries = ramdisk.bootstrap_entries(args.init, args.nsm)
    elif args.app:
        env = ramdisk.parse_env_args(args.env or [])
        entries = ramdisk.app_entries(args.rootfs, args.cmd, env, modes=args.modes)
    else:
        entries = ramdisk.tree_entries(args.tree, modes=args.modes)
    compression: Compression = "gzip" if args.gzip else "none"
    result = write_cpio_file(
        entries, args.output, mtime=args.mtime, compression=compression, align=eif_alignment([compression])
    )
    print(f"{result.sha256}  {args.output}")
    return EXIT_OK


_COMMANDS.append(_add_ramdisk)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose - args.quiet
    with log.use(log.StderrReporter(verbosity=verbosity)):
        try:
            result: int = args.func(args)
        except EifbuildError as exc:
            if verbosity >= 2:
                traceback.print_exc()
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return EXIT_OK
    return result


def entrypoint() -> None:
    sys.exit(main())
