"""``eifbuild kernel lint CONFIG``: check a kernel ``.config`` for what an enclave kernel needs.

Reached through the ``kernel`` command (its first argument ``lint``; see :mod:`.boot`). Prints one
line per finding (``error:``, ``warning:``, ``waived:``) and a summary; exit 1 when there are
errors, 0 when only warnings (or nothing); unreadable files and bad arguments exit 2. ``--app
script,network`` (or ``all``) also checks what those kinds of app need (warnings naming them).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..arch import parse_arch
from ..eif import read_kernel_config_text
from ..errors import UsageError
from .common import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from ..arch import Arch
    from ..toolchain import LintReport

# options of `kernel` that only apply to building a recipe
_BUILD_ONLY = (("check", "--check"), ("output", "--output"), ("source", "--source"), ("jobs", "--jobs"))


def cmd_kernel_lint(args: argparse.Namespace) -> int:
    """``kernel lint CONFIG [--arch ARCH] [--waive CONFIG_NAME]… [--app KINDS]…``."""
    from ..toolchain import check_waivers, config_arch, lint_config, parse_apps, parse_config  # noqa: PLC0415

    _refuse_build_options(args)
    if args.config is None:
        msg = "kernel lint needs the .config file to check: eifbuild kernel lint CONFIG"
        raise UsageError(msg)
    config = parse_config(read_kernel_config_text(args.config), path=args.config)
    arch = _arch(args.arch, config_arch(config), args.config)
    image = _image_beside(args.config)
    waive = check_waivers(args.waive or (), key="--waive")
    apps = parse_apps(args.app or (), key="--app")
    size = image.stat().st_size if image is not None else None
    report = lint_config(config, arch, waive=waive, image_size=size, apps=apps)
    for line in report_lines(report):
        print(line)
    print(f"{args.config} ({arch}): {report.summary}")
    return EXIT_FAILED if report.errors else EXIT_OK


def report_lines(report: LintReport) -> list[str]:
    """``error: …``, ``warning: …`` and ``waived: …`` lines, in that order."""
    lines = [f"error: {finding}" for finding in report.errors]
    lines += [f"warning: {finding}" for finding in report.warnings]
    lines += [f"waived: {finding}" for finding in report.waived]
    return lines


def _refuse_build_options(args: argparse.Namespace) -> None:
    for dest, flag in _BUILD_ONLY:
        if getattr(args, dest) not in (None, False):
            msg = f"{flag} only applies to building a recipe, not to kernel lint"
            raise UsageError(msg, key=flag)


def _arch(given: list[str] | None, found: Arch | None, path: Path) -> Arch:
    """--arch (once), else the arch the config says; a mismatch or no arch at all is a usage error."""
    if given and len(given) > 1:
        msg = "kernel lint checks one config for one arch: give --arch once"
        raise UsageError(msg, key="--arch")
    if given:
        arch = parse_arch(given[0], where="--arch")
        if found is not None and found != arch:
            msg = f"{path} is a config for {found}, not {arch}"
            raise UsageError(msg, key="--arch")
        return arch
    if found is None:
        msg = f"{path} names no arch (neither CONFIG_X86_64 nor CONFIG_ARM64): give --arch"
        raise UsageError(msg, key="--arch")
    return found


def _image_beside(config: Path) -> Path | None:
    """The kernel a ``<image>.config`` belongs to (``bzImage.config`` → ``bzImage``), if it is there:
    the summary then gives its size."""
    if config.suffix != ".config" or not config.stem:
        return None
    image = config.with_name(config.stem)
    return image if image.is_file() else None


def print_build_lint(report: LintReport, label: str) -> None:
    """After a build: warnings (stderr) and the summary line (stdout)."""
    for line in report_lines(report):
        print(f"{label}: {line}", file=sys.stderr)
    print(f"lint  {label}: {report.summary}")
