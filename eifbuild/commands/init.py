"""``init``: start an app repo (dodo.py, a commented eif.toml, the chosen recipes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .common import EXIT_OK, Adder

if TYPE_CHECKING:
    import argparse


def _add_init(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="start an app repo: dodo.py, a commented eif.toml and the chosen recipes",
        description="Write a two-line dodo.py, a commented eif.toml and copies of eifbuild's recipes "
        "(and, for --bootstrap demo, its demo kernels) into DIR; then `doit eif` builds the EIF. "
        "An existing file is never overwritten: nothing is written then.",
    )
    p.add_argument("directory", nargs="?", type=Path, default=Path(), metavar="DIR", help="default: .")
    p.add_argument(
        "--bootstrap",
        choices=["demo", "aws"],
        default="demo",
        help="demo: eifbuild's small demo kernels and its own init (builds offline; for local boots); "
        "aws: AWS's kernel, init and nsm.ko, as nitro-cli uses them (default: demo)",
    )
    app = p.add_mutually_exclusive_group(required=True)
    app.add_argument(
        "--oci", metavar="REF", help="the app is this OCI image (registry ref, layout or archive)"
    )
    app.add_argument("--rootfs", metavar="DIR", help="the app is this directory (relative to DIR)")
    p.add_argument(
        "--cmd", action="append", default=[], metavar="ARG", help="the command, one argument each; repeatable"
    )
    p.add_argument("--name", help="the EIF's ImageName (default: DIR's name)")
    p.set_defaults(func=_cmd_init)


def _cmd_init(args: argparse.Namespace) -> int:
    from ..plan import ScaffoldApp, init_project  # noqa: PLC0415

    app = ScaffoldApp(oci=args.oci, rootfs=args.rootfs, cmd=tuple(args.cmd))
    written = init_project(args.directory, bootstrap=args.bootstrap, app=app, name=args.name)
    for path in written:
        print(f"wrote {os.path.relpath(path)}")
    where = "" if args.directory == Path() else f"cd {args.directory} && "
    print(f"next: {where}doit eif")
    return EXIT_OK


COMMANDS: list[Adder] = [_add_init]
