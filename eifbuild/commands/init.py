"""``init``: start an app repo (dodo.py, a commented eif.toml, the chosen recipes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..errors import EifbuildError
from .common import EXIT_OK, Adder

if TYPE_CHECKING:
    import argparse

    from ..arch import Arch
    from ..plan import ScaffoldApp


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
    from .. import plan  # noqa: PLC0415

    app = plan.ScaffoldApp(oci=args.oci, rootfs=args.rootfs, cmd=tuple(args.cmd))
    arches = _arches(args, app)
    written = plan.init_project(
        args.directory, bootstrap=args.bootstrap, app=app, name=args.name, arches=arches
    )
    for path in written:
        print(f"wrote {os.path.relpath(path)}")
    print(f"next: {plan.next_step(args.directory, args.bootstrap, app, arches)}")
    return EXIT_OK


def _arches(args: argparse.Namespace, app: ScaffoldApp) -> tuple[Arch, ...]:
    """The image's arches where they can be read; else the bootstrap's default, with a warning."""
    from .. import plan  # noqa: PLC0415

    default = plan.default_arches(args.bootstrap)
    if app.oci is None:
        return default
    try:
        found = plan.image_arches(app.oci, args.directory.absolute())
    except EifbuildError as exc:
        listed = ", ".join(default)
        log.warn(f"cannot read the image's platforms ({exc}); eif.toml lists {listed}: remove any it lacks")
        return default
    return plan.choose_arches(args.bootstrap, app.oci, found)


COMMANDS: list[Adder] = [_add_init]
