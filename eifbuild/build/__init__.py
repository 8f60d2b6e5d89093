"""The build plan: eif.toml, the nodes of the plan, rootfs fingerprints, the self-check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import (
        CONFIG_NAME,
        EIFBUILD_INIT_C,
        LOCK_NAME,
        App,
        Builtin,
        Compile,
        PathInput,
        Project,
        SourceRef,
        TextInput,
        load_project,
        parse_project,
    )
    from .eifnode import EifNode, Published
    from .inputs import CompileNode, LocalNode, OciNode, SourceNode, TextNode
    from .node import Artifact, Node, Result
    from .plan import Plan
    from .ramdisks import AppRamdisk, BootstrapRamdisk, RamdiskNode
    from .selfcheck import CheckReport, self_check
    from .treedigest import FileDigests, tree_digest

__all__ = [
    "CONFIG_NAME",
    "EIFBUILD_INIT_C",
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
    "LocalNode",
    "Node",
    "OciNode",
    "PathInput",
    "Plan",
    "Project",
    "Published",
    "RamdiskNode",
    "Result",
    "SourceNode",
    "SourceRef",
    "TextInput",
    "TextNode",
    "load_project",
    "parse_project",
    "self_check",
    "tree_digest",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "config": (
            "CONFIG_NAME",
            "EIFBUILD_INIT_C",
            "LOCK_NAME",
            "App",
            "Builtin",
            "Compile",
            "PathInput",
            "Project",
            "SourceRef",
            "TextInput",
            "load_project",
            "parse_project",
        ),
        "eifnode": ("EifNode", "Published"),
        "inputs": ("CompileNode", "LocalNode", "OciNode", "SourceNode", "TextNode"),
        "node": ("Artifact", "Node", "Result"),
        "plan": ("Plan",),
        "ramdisks": ("AppRamdisk", "BootstrapRamdisk", "RamdiskNode"),
        "selfcheck": ("CheckReport", "self_check"),
        "treedigest": ("FileDigests", "tree_digest"),
    },
)
