"""``eifbuild lock``: make sure every source of a project's recipes, and a registry tag in its
``[app] oci``, is pinned, by its recipe or by the lock file (:mod:`eifbuild.sources.lock` is the
file's model).

Without ``--trust-on-first-use`` a missing pin is an error naming the flag (so a plain ``eifbuild
lock`` checks that the lock is complete); with it, each unpinned source is downloaded once (into the
shared download cache) and its sha256 and size are recorded, and an image tag is resolved to its
digest and each arch's platform manifest.
The recipes and the lock file default to those of the eif.toml at or above the current directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .. import log
from ..errors import ConfigError, EifbuildError
from ..sources import LOCK_COMMAND, ImageEntry, Lock, Recipe, Source, load_recipe
from ..store import Store
from .config import CONFIG_NAME, LOCK_NAME, find_project_dir, load_project

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from ..arch import Arch
    from ..store import Downloader, SourceCache
    from .config import Project


@dataclass(frozen=True)
class LockResult:
    """What ``lock`` found for one source: pinned by its recipe, already locked, or newly locked."""

    source: Source
    status: Literal["pinned", "locked", "new"]
    sha256: str | None = None
    size: int | None = None


def default_lock_path() -> Path:
    """eif.lock next to the project's eif.toml; relative to the current directory when below it."""
    found = find_project_dir() / LOCK_NAME
    cwd = Path.cwd()
    return found.relative_to(cwd) if found.is_relative_to(cwd) else found


@dataclass(frozen=True)
class ImageLockResult:
    """What ``lock`` found for the project's ``[app] oci`` registry tag: locked already, or new."""

    ref: str
    status: Literal["locked", "new"]
    entry: ImageEntry


def lock_project(
    recipes: Sequence[Path], lock_file: Path | None, *, trust_on_first_use: bool = False
) -> tuple[Path, list[LockResult], list[ImageLockResult]]:
    """``eifbuild lock``: :func:`lock_sources` for ``recipes`` and ``lock_file``, by default the
    recipes and the lock file of the project's eif.toml, whose image tag is locked too
    (:func:`lock_images`); returns the lock file and the results."""
    if recipes:
        lock_path = lock_file or default_lock_path()
        return lock_path, lock_sources(recipes, lock_path, trust_on_first_use=trust_on_first_use), []
    project = load_project(find_project_dir() / CONFIG_NAME)
    lock_path = lock_file or project.lock_file
    failed: EifbuildError | None = None
    try:  # the sources of the arches eif.toml builds; the image is locked even when one fails
        sources = lock_sources(
            project.recipes, lock_path, trust_on_first_use=trust_on_first_use, arches=project.arches
        )
    except EifbuildError as exc:
        failed, sources = exc, []
    images = lock_images(project, lock_path, trust_on_first_use=trust_on_first_use)
    if failed is not None:
        raise failed
    return lock_path, sources, images


def lock_images(
    project: Project, lock_path: str | Path, *, trust_on_first_use: bool = False
) -> list[ImageLockResult]:
    """Make sure a registry tag in ``[app] oci`` has a pin in the lock file for every arch.

    A complete entry is kept (and checked against the manifests in the store, when they are
    there); entries of tags the project no longer names are dropped. A missing pin is an error
    unless ``trust_on_first_use``: then the tag is resolved to its digest (an entry's digest is
    kept when only an arch is missing) and each arch's platform manifest recorded.
    """
    from .. import oci  # noqa: PLC0415 - registry code only when locking an image

    lock = Lock.load(lock_path)
    before = lock.dumps()
    ref = project.app.oci
    tag = None if ref is None else oci.registry_tag(ref, project.root)
    lock.keep_images(set() if ref is None or tag is None else {ref})
    results = []
    if ref is not None and tag is not None:
        store = Store.for_project(project.root)
        entry = lock.image(ref)
        missing = [a for a in project.arches if entry is None or a not in entry.manifests]
        if not missing and entry is not None:
            _check_image_entry(ref, entry, lock.path, store, project)
            results.append(ImageLockResult(ref, "locked", entry))
        elif not trust_on_first_use:
            arches = "" if entry is None else f" for {', '.join(missing)}"
            msg = (
                f"image {ref!r} is a tag with no pin{arches} in {lock.path}: run '{LOCK_COMMAND}' to "
                "resolve it and record its digest"
            )
            raise ConfigError(msg, path=project.path, key="app.oci")
        else:
            pinned = oci.resolve_tag(ref) if entry is None else str(tag.pinned(entry.digest))
            found, failed = _platform_manifests(pinned, missing, store)
            entry = ImageEntry(pinned.rpartition("@")[2], {**(entry.manifests if entry else {}), **found})
            lock.record_image(ref, entry)  # the digest and the arches found, even when one failed
            shown = ", ".join(f"{arch} {digest}" for arch, digest in found.items()) or "no arch yet"
            log.step(f"locked image {ref}: {entry.digest} ({shown})")
            if failed is not None:
                lock.save()
                raise failed
            results.append(ImageLockResult(ref, "new", entry))
    if lock.dumps() != before:
        lock.save()
    return results


def _platform_manifests(
    pinned: str, arches: Sequence[Arch], store: Store
) -> tuple[dict[Arch, str], EifbuildError | None]:
    """Each arch's platform manifest, arch by arch: what was found, and the first failure."""
    from .. import oci  # noqa: PLC0415

    found: dict[Arch, str] = {}
    for arch in arches:
        try:
            found.update(oci.platform_manifests(pinned, [arch], store=store))
        except EifbuildError as exc:
            return found, exc
    return found, None


def _check_image_entry(ref: str, entry: ImageEntry, lock_path: Path, store: Store, project: Project) -> None:
    """A recorded manifest must be what the recorded digest gives (checked when in the store)."""
    from .. import oci  # noqa: PLC0415

    tag = oci.registry_tag(ref, project.root)
    assert tag is not None  # noqa: S101 - the caller found a tag
    pinned = str(tag.pinned(entry.digest))
    for arch, manifest in sorted(entry.manifests.items()):
        image = oci.cached_image(pinned, arch=arch, store=store, project_dir=project.root)
        if image is not None and image.manifest_digest != manifest:
            msg = f"records manifest {manifest} for {arch}, but {pinned} gives {image.manifest_digest}"
            raise ConfigError(msg, path=lock_path, key=f"images.{ref}.manifests.{arch}")


def lock_sources(
    recipes: Iterable[Recipe | str | Path],
    lock_path: str | Path,
    *,
    trust_on_first_use: bool = False,
    cache: SourceCache | None = None,
    downloader: Downloader | None = None,
    arches: Collection[Arch] | None = None,
) -> list[LockResult]:
    """Make sure every source of ``recipes`` (those for ``arches`` and for every arch, when given)
    is pinned, by its recipe or by the lock file.

    Sources with a lock entry for their current location are kept; entries of these recipes'
    sources that no longer exist or are pinned by their recipe now are dropped. Missing pins are an
    error unless ``trust_on_first_use``: then each such source is downloaded once (into the shared
    cache) and its sha256 and size recorded; when one fails, the others are still tried and what
    was locked is written before the first failure is raised. The lock file is written only when it
    changed.
    """
    lock = Lock.load(lock_path)
    before = lock.dumps()
    loaded = [r if isinstance(r, Recipe) else load_recipe(r) for r in recipes]
    results: list[LockResult | Source] = []  # a Source: still to be locked
    for recipe in loaded:
        lock.drop_stale(recipe)
        wanted = (s for s in recipe.all_sources() if arches is None or s.arch is None or s.arch in arches)
        results.extend(_known(source, lock) for source in wanted)
    missing = [r for r in results if isinstance(r, Source)]
    if missing and not trust_on_first_use:
        names = ", ".join(s.label for s in missing)
        paths = " ".join(sorted({str(s.recipe_path) for s in missing}))
        msg = (
            f"{len(missing)} source(s) have no pin and no entry in {lock.path}: {names}; "
            f"run '{LOCK_COMMAND} {paths}' to download them once and record their sha256"
        )
        raise ConfigError(msg)
    from ..store import Downloader, SourceCache  # noqa: PLC0415 - network code only when locking

    cache = cache or SourceCache()
    downloader = downloader or Downloader()
    done: list[LockResult] = []
    failures: list[EifbuildError] = []
    for result in results:
        if isinstance(result, LockResult):
            done.append(result)
            continue
        try:
            done.append(_trust(result, lock, cache, downloader))
        except EifbuildError as exc:
            failures.append(exc)
    if lock.dumps() != before or (missing and not lock.path.exists()):
        lock.save()
    for later in failures[1:]:
        log.warn(f"also not locked: {later}")
    if failures:
        raise failures[0]
    return done


def _known(source: Source, lock: Lock) -> LockResult | Source:
    """The result for a source pinned by its recipe or by a current entry; else the source itself."""
    if source.pins.pinned:
        return LockResult(source, "pinned")
    entry = lock.current_entry(source)
    if entry is not None:
        return LockResult(source, "locked", entry.sha256, entry.size)
    return source


def _trust(source: Source, lock: Lock, cache: SourceCache, downloader: Downloader) -> LockResult:
    local = source.local_path
    if local is not None and local.is_dir():  # a directory's sha256 pin is its NAR hash
        from ..sources import nar_digest_of_path  # noqa: PLC0415

        nar = nar_digest_of_path(local)
        sha256, size = nar.sha256, nar.size
    else:
        from ..sources import obtain  # noqa: PLC0415

        blob = obtain(source, cache=cache, downloader=downloader, trust_on_first_use=True)
        sha256, size = blob.sha256, blob.size
    lock.record(source, size, sha256)
    log.step(f"locked {source.label}: sha256 {sha256} ({size} bytes)")
    return LockResult(source, "new", sha256, size)
