"""The provenance file the EIF node publishes beside each EIF (``<name>-<arch>.intoto.json``, and
``.intoto.jsonl`` signed when the project signs): what went into it, from the plan's DAG.

Read at publish time, never part of the EIF's store key: the git commit and whether the tree was
clean (the EIF's bytes do not depend on them).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..toolchain import EIFBUILD_INIT_C
from .inputs import LocalNode, OciNode, SourceNode

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..provenance import Dependency
    from .config import Project
    from .node import Node


def git_facts(root: Path, *, ignore: Iterable[Path] = ()) -> tuple[Path, dict[str, Any]] | None:
    """The checkout's top directory, its HEAD commit and whether its tree is clean (nothing
    modified, nothing untracked and not ignored, but for ``ignore`` (the build's own output dir and
    store) and doit's state files); None outside git."""
    try:
        top = Path(_git(root, "rev-parse", "--show-toplevel"))
        commit = _git(root, "rev-parse", "HEAD")
        excluded = [f":(exclude){p.relative_to(top).as_posix()}" for p in ignore if p.is_relative_to(top)]
        status = _git(top, "status", "--porcelain", "--", ".", ":(exclude,glob)**/.doit.db*", *excluded)
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    return top, {"commit": commit, "clean": status == ""}


def _git(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    return done.stdout.strip()


def relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, POSIX-style (eifbuild's own files as ``eifbuild/…``)."""
    if path == EIFBUILD_INIT_C:
        return "eifbuild/init/init.c"
    return Path(os.path.relpath(path, base)).as_posix()


def zig_version() -> str:
    try:
        return importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def dependencies(
    roots: Iterable[Node[Any]], *, base: Path, project: Project, recipes: Mapping[str, tuple[Path, str]]
) -> list[Dependency]:
    """One entry per input reachable from ``roots``: pinned sources, OCI images (index, manifest,
    layers), repo files and directories (trees by their tree digest), and every recipe file."""
    from ..provenance import Dependency  # noqa: PLC0415

    found: list[Dependency] = [
        Dependency(relative(path, base), {"sha256": digest}, f"recipe:{name}")
        for name, (path, digest) in sorted(recipes.items())
    ]
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend(node.deps)
        result = node.cached()
        if result is None:
            continue
        if isinstance(node, SourceNode):
            source = node.source
            local = source.local_path
            uri = source.origin if local is None else relative(local, base)
            found.append(
                Dependency(uri, {"sha256": result.sha256}, f"source:{source.recipe}.{source.qualified_name}")
            )
        elif isinstance(node, LocalNode):
            if node.path.is_dir():
                found.append(Dependency(relative(node.path, base), {"eifbuild-tree": result.sha256}, "tree"))
            else:
                found.append(Dependency(relative(node.path, base), {"sha256": result.sha256}, "file"))
        elif isinstance(node, OciNode):
            image = result.image
            found.extend(_image_dependencies(image))
    return found


def _image_dependencies(image: Any) -> list[Dependency]:
    from ..provenance import Dependency  # noqa: PLC0415

    def digest(value: str) -> dict[str, str]:
        algo, _, hexdigest = value.partition(":")
        return {algo: hexdigest}

    out = [Dependency(image.ref, digest(image.manifest_digest), f"oci-manifest:{image.platform}")]
    if image.index_digest is not None:
        out.append(Dependency(image.ref, digest(image.index_digest), "oci-index"))
    out.extend(
        Dependency(image.ref, digest(layer.digest), f"oci-layer:{i}") for i, layer in enumerate(image.layers)
    )
    return out
