"""``fetch``, ``lock`` and ``store``: pinned sources, the lock file and the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..arch import parse_arch
from ..store import describe_garbage
from .common import EXIT_FAILED, EXIT_OK, STORE_HELP, Adder, store_of

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

    from ..store import Garbage, Store, StoreEntry


def _lock_path(args: argparse.Namespace) -> Path:
    from ..plan import default_lock_path  # noqa: PLC0415

    return Path(args.lock_file) if args.lock_file else default_lock_path()


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
    p.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)
    p.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ..sources import Lock, fetch_all, load_recipe  # noqa: PLC0415

    arches = [parse_arch(a, where="--arch") for a in args.arch] if args.arch else None
    recipe = load_recipe(args.recipe)
    lock = Lock.load(_lock_path(args))
    for got in fetch_all(recipe, store=store_of(args), arches=arches, lock=lock):
        print(f"{got.source.qualified_name} {got.sha256} {got.path}")
    return EXIT_OK


def _add_lock(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lock",
        help="check every source and image tag is pinned; record missing pins in eif.lock",
        description="Check that every source of the recipes is pinned, by its recipe or by the lock "
        "file, and (for ./eif.toml) that a registry tag in [app] oci has its digest there. With "
        "--trust-on-first-use, download each unpinned source once and record its sha256 and size, "
        "and resolve the tag to its digest and each arch's platform manifest (check the printed "
        "hashes against a copy you trust).",
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
    from ..plan import lock_project  # noqa: PLC0415

    lock_path, results, images = lock_project(
        args.recipes, args.lock_file, trust_on_first_use=args.trust_on_first_use
    )
    for r in results:
        detail = f" {r.sha256} {r.size} {r.source.origin}" if r.sha256 else ""
        print(f"{r.status:<6} {r.source.recipe}/{r.source.qualified_name}{detail}")
    for image in images:
        manifests = " ".join(f"{arch}={digest}" for arch, digest in sorted(image.entry.manifests.items()))
        print(f"{image.status:<6} image {image.ref} {image.entry.digest} {manifests}")
    if any(r.status == "new" for r in results) or any(i.status == "new" for i in images):
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
        action.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)


def _ramdisk_label(params: Mapping[str, Any]) -> str:
    cmd = params.get("cmd")
    return f"{params.get('layout')} ramdisk" + (f", cmd {' '.join(cmd)}" if cmd else "")


def _compile_label(params: Mapping[str, Any]) -> str:
    sources = " ".join(params.get("sources", []))
    return f"{params.get('output')} for {params.get('target')}, from {sources}"


# By the kind of step, from its parameters: entries stored by older versions get a label too.
_LABELS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "eif": lambda p: f"EIF {p.get('name')} {p.get('version')} {p.get('arch')}",
    "ramdisk": _ramdisk_label,
    "zig-cc": _compile_label,
    "oci-blob": lambda p: f"image blob {p.get('digest')}",
    "oci-layer": lambda p: f"image layer {p.get('digest')}",
    "kernel": lambda p: f"kernel {p.get('image')} for {p.get('arch')}",
}


def _entry_label(entry: StoreEntry) -> str:
    """What an entry is, in a few words: a source's name, else what its step's parameters say."""
    if source := entry.meta.get("source"):
        return str(source)
    label = _LABELS.get(entry.kind)
    return label(entry.record["step"].get("params", {})) if label else ""


def _cmd_store_ls(args: argparse.Namespace) -> int:
    for entry in store_of(args).entries():
        label = _entry_label(entry)
        print(f"{entry.key}  {entry.kind:<10} {entry.size:>12}  {entry.created}  {label}".rstrip())
    return EXIT_OK


def _cmd_store_verify(args: argparse.Namespace) -> int:
    store = store_of(args)
    checked = len(list(store.keys()))
    problems = store.verify(repair=args.repair)
    for problem in problems:
        print(f"{problem.key}: {problem.message}")
    corrupt = len({p.key for p in problems})
    action = " (removed)" if args.repair and corrupt else ""
    print(f"{checked} entries checked, {corrupt} corrupt{action}")
    if garbage := store.reclaim_garbage(dry_run=not args.repair):
        _print_garbage(store, garbage)
        print(
            f"removed {describe_garbage(garbage)}"
            if args.repair
            else f"{describe_garbage(garbage)}: 'eifbuild store gc' removes them"
        )
    return EXIT_FAILED if problems else EXIT_OK


def _print_garbage(store: Store, garbage: list[Garbage]) -> None:
    for item in garbage:
        print(f"{item.path.relative_to(store.root)}  {item.size:,} bytes")


def _cmd_store_gc(args: argparse.Namespace) -> int:
    store = store_of(args)
    sizes = {e.key: e.size for e in store.entries()}
    garbage = store.reclaim_garbage(dry_run=args.dry_run)  # gc would remove it too, but not say so
    removed = store.gc(keep_days=args.keep_days, dry_run=args.dry_run)
    for key in removed:
        print(key)
    _print_garbage(store, garbage)
    verb = "would remove" if args.dry_run else "removed"
    entries = f"{len(removed)} entries ({sum(sizes.get(k, 0) for k in removed)} bytes)"
    print(f"{verb} {entries}" + (f" and {describe_garbage(garbage)}" if garbage else ""))
    return EXIT_OK


COMMANDS: list[Adder] = [_add_fetch, _add_lock, _add_store]
