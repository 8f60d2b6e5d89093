"""``cache``: the shared build cache on S3 (``push``, ``verify``, ``prune``, ``keygen``)."""

from __future__ import annotations

import datetime
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .common import EXIT_FAILED, EXIT_OK, STORE_HELP, Adder, store_of

if TYPE_CHECKING:
    import argparse

    from ..plan import Plan
    from ..store.remote import RemoteCache


def _add_cache(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cache", help="push to, verify, prune or make keys for the shared build cache (S3)")
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    push = actions.add_parser(
        "push",
        help="push every store entry the eif.toml's build uses, signed ($EIFBUILD_CACHE_SIGNING_KEY)",
    )
    push.set_defaults(func=_cmd_push)
    verify = actions.add_parser(
        "verify", help="re-check signatures and hashes of the remote entries the build needs; exit 1 if bad"
    )
    verify.set_defaults(func=_cmd_verify)
    for action in (push, verify):
        action.add_argument("--config", type=Path, metavar="EIF.toml", help="default: ./eif.toml or above")
        action.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)
    prune = actions.add_parser(
        "prune",
        help="delete the entries not pushed or used by a pushing build in the last N days, and their blobs",
    )
    prune.add_argument("--keep-days", type=float, required=True, metavar="N", help="fractions allowed")
    prune.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="delete no blob younger than this (default: 24; must exceed 12 plus the longest push)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    prune.add_argument("--config", type=Path, metavar="EIF.toml", help="default: ./eif.toml or above")
    prune.set_defaults(func=_cmd_prune)
    keygen = actions.add_parser(
        "keygen", help="make an ed25519 key pair: NAME.secret (keep it) and NAME.pub (for trusted_keys)"
    )
    keygen.add_argument("name", metavar="NAME")
    keygen.add_argument("--dir", type=Path, default=Path(), help="where to write them (default: .)")
    keygen.set_defaults(func=_cmd_keygen)


def _plan_and_remote(args: argparse.Namespace) -> tuple[Plan, RemoteCache]:
    from ..plan import Plan, find_project_dir, load_project  # noqa: PLC0415
    from ..store.remote import RemoteCache, with_environment  # noqa: PLC0415

    project = load_project(args.config or find_project_dir())
    plan = Plan(project, store_of(args) if args.cache else None)
    return plan, RemoteCache(with_environment(project.cache))


def _plan_keys(plan: Plan) -> tuple[list[str], int]:
    """Store keys the plan uses that this store has, and how many nodes are not built yet."""
    unbuilt = sum(1 for node in plan.nodes() if node.cached() is None and node.key() is not None)
    return sorted(k for k in plan.store_keys() if k in plan.store), unbuilt


def _cmd_push(args: argparse.Namespace) -> int:
    from ..store.remote import push_entry  # noqa: PLC0415

    plan, cache = _plan_and_remote(args)
    key = cache.signing_key()
    keys, unbuilt = _plan_keys(plan)
    for store_key in keys:
        entry = plan.store.get(store_key)
        if entry is not None:
            pushed = push_entry(cache, plan.store, entry, key)
            state = f"pushed ({pushed.uploaded_bytes} bytes)" if pushed.new else "already there"
            print(f"{store_key}  {entry.kind:<10} {state}")
    print(cache.transfers.summary(cache.url))
    if unbuilt:
        print(f"{unbuilt} steps are not built yet: run 'doit eif' first to push them too")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..store.remote import verify_remote_entry  # noqa: PLC0415

    plan, cache = _plan_and_remote(args)
    keys, _ = _plan_keys(plan)
    bad = 0
    for store_key in keys:
        with tempfile.TemporaryDirectory(prefix="eifbuild-verify-") as scratch:
            problem = verify_remote_entry(cache, store_key, Path(scratch))
        bad += problem is not None
        print(f"{store_key}  {problem or 'ok'}")
    print(f"{len(keys)} remote entries checked, {bad} missing or bad")
    return EXIT_FAILED if bad else EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..plan import find_project_dir, load_project  # noqa: PLC0415
    from ..store.remote import RemoteCache, prune, with_environment  # noqa: PLC0415

    keep, grace = (
        _duration(args.keep_days, "--keep-days", 1),
        _duration(args.grace_hours, "--grace-hours", 1 / 24),
    )
    project = load_project(args.config or find_project_dir())
    cache = RemoteCache(with_environment(project.cache))
    report = prune(cache, keep=keep, grace=grace, dry_run=args.dry_run, echo=print)
    print(report.summary())
    return EXIT_OK


def _duration(value: float, option: str, days: float) -> datetime.timedelta:
    """``value`` units of ``days`` days; a negative, infinite or NaN value is a usage error."""
    if not math.isfinite(value) or value < 0 or value * days > 36500:
        msg = f"expected a number of {'days' if days == 1 else 'hours'} from 0 to 100 years, not {value}"
        raise UsageError(msg, key=option)
    return datetime.timedelta(days=value * days)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from ..store.remote import generate_key  # noqa: PLC0415

    secret, public = generate_key(args.name)
    secret_path, public_path = args.dir / f"{args.name}.secret", args.dir / f"{args.name}.pub"
    try:
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        msg = f"{secret_path} exists: not overwriting a signing key"
        raise UsageError(msg, key="NAME") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret)
    public_path.write_text(public + "\n", encoding="ascii")
    print(f"secret key: {secret_path} (set EIFBUILD_CACHE_SIGNING_KEY to it; never commit it)")
    print(f'public key for [cache] trusted_keys: "{public}"')
    return EXIT_OK


COMMANDS: list[Adder] = [_add_cache]
