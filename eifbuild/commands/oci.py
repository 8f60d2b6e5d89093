"""``oci inspect`` and ``oci unpack``: look at OCI images without a Docker daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..arch import parse_arch
from .common import EXIT_OK, PRESERVE_SPECIAL_HELP, STORE_HELP, Adder, store_of

if TYPE_CHECKING:
    import argparse

    from ..oci import OciImage
    from ..store import Store


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
    unpack.add_argument("--preserve-special", action="store_true", help=PRESERVE_SPECIAL_HELP)
    unpack.set_defaults(func=_cmd_oci_unpack)
    for action in (inspect, unpack):
        action.add_argument("ref", metavar="REF", help="the image")
        action.add_argument("--arch", default=_host_arch(), help="x86_64 or aarch64 (default: this host's)")
        action.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)


def _oci_image(args: argparse.Namespace) -> tuple[OciImage, Store]:
    from ..oci import resolve_image  # noqa: PLC0415 - requests and friends only for this command

    arch = parse_arch(args.arch, where="--arch")
    store = store_of(args)
    image = resolve_image(args.ref, arch=arch, store=store, project_dir=Path.cwd(), allow_tag=True)
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
    from ..oci import unpack_image  # noqa: PLC0415

    image, store = _oci_image(args)
    result = unpack_image(image, store, args.output, preserve_special=args.preserve_special)
    for skipped in result.skipped:
        print(f"skipped: {skipped.path}: {skipped.what}")
    print(f"{result.paths} paths of {image.manifest_digest} ({image.platform}) written to {args.output}")
    if result.skipped:
        log.warn(f"{len(result.skipped)} device nodes or setuid/setgid bits left out (--preserve-special)")
    return EXIT_OK


COMMANDS: list[Adder] = [_add_oci]
