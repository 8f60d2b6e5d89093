"""The planner: eif.toml, the plan's nodes, rootfs fingerprints, locking, kernel recipes, the self-check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .config import CONFIG_NAME, FAILURE_FILE_ENV, find_project, find_project_dir, load_project
    from .eifnode import EifNode
    from .inputs import CompileNode, OciNode, SourceNode
    from .kernelrecipe import build_from_recipe
    from .locking import default_lock_path, lock_project
    from .node import Node
    from .plan import Plan
    from .ramdisks import RamdiskNode
    from .reproduction import reproduce
    from .scaffold import ScaffoldApp, choose_arches, default_arches, image_arches, init_project, next_step
    from .selfcheck import self_check
    from .treedigest import FileDigests

EXPORTS = {
    "CONFIG_NAME": ".config",
    "FAILURE_FILE_ENV": ".config",
    "find_project": ".config",
    "find_project_dir": ".config",
    "load_project": ".config",
    "EifNode": ".eifnode",
    "CompileNode": ".inputs",
    "OciNode": ".inputs",
    "SourceNode": ".inputs",
    "build_from_recipe": ".kernelrecipe",
    "default_lock_path": ".locking",
    "lock_project": ".locking",
    "Node": ".node",
    "Plan": ".plan",
    "RamdiskNode": ".ramdisks",
    "reproduce": ".reproduction",
    "ScaffoldApp": ".scaffold",
    "choose_arches": ".scaffold",
    "default_arches": ".scaffold",
    "image_arches": ".scaffold",
    "init_project": ".scaffold",
    "next_step": ".scaffold",
    "self_check": ".selfcheck",
    "FileDigests": ".treedigest",
}

__all__ = [
    "CONFIG_NAME",
    "FAILURE_FILE_ENV",
    "CompileNode",
    "EifNode",
    "FileDigests",
    "Node",
    "OciNode",
    "Plan",
    "RamdiskNode",
    "ScaffoldApp",
    "SourceNode",
    "build_from_recipe",
    "choose_arches",
    "default_arches",
    "default_lock_path",
    "find_project",
    "find_project_dir",
    "image_arches",
    "init_project",
    "load_project",
    "lock_project",
    "next_step",
    "reproduce",
    "self_check",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
