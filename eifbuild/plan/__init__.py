"""The planner: eif.toml, the plan's nodes, rootfs fingerprints, locking, kernel recipes, the self-check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import (
        CONFIG_NAME,
        FAILURE_FILE_ENV,
        LOCK_NAME,
        App,
        Builtin,
        Compile,
        PathInput,
        Project,
        SourceRef,
        TextInput,
        find_project_dir,
        load_project,
        parse_project,
    )
    from .eifnode import EifNode, Published
    from .inputs import CompileNode, LocalNode, OciNode, SourceNode, TextNode
    from .kernelrecipe import KernelRecipe, RecipeKernel, build_from_recipe, parse_kernel_build
    from .locking import (
        ImageLockResult,
        LockResult,
        default_lock_path,
        lock_images,
        lock_project,
        lock_sources,
    )
    from .node import Artifact, Node, Result
    from .plan import Plan
    from .ramdisks import AppRamdisk, BootstrapRamdisk, RamdiskNode
    from .scaffold import ScaffoldApp, init_project
    from .selfcheck import CheckReport, self_check
    from .treedigest import FileDigests, tree_digest

__all__ = [
    "CONFIG_NAME",
    "FAILURE_FILE_ENV",
    "LOCK_NAME",
    "App",
    "AppRamdisk",
    "Artifact",
    "BootstrapRamdisk",
    "Builtin",
    "CheckReport",
    "Compile",
    "CompileNode",
    "EifNode",
    "FileDigests",
    "ImageLockResult",
    "KernelRecipe",
    "LocalNode",
    "LockResult",
    "Node",
    "OciNode",
    "PathInput",
    "Plan",
    "Project",
    "Published",
    "RamdiskNode",
    "RecipeKernel",
    "Result",
    "ScaffoldApp",
    "SourceNode",
    "SourceRef",
    "TextInput",
    "TextNode",
    "build_from_recipe",
    "default_lock_path",
    "find_project_dir",
    "init_project",
    "load_project",
    "lock_images",
    "lock_project",
    "lock_sources",
    "parse_kernel_build",
    "parse_project",
    "self_check",
    "tree_digest",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
