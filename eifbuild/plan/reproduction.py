"""``eifbuild reproduce FILE``: rebuild the EIF a provenance file describes from this checkout, from
scratch (as ``doit check`` does), and compare its digest and every PCR with the provenance's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..util.fsutil import hash_file
from ._provenance import git_facts
from .config import find_project_dir, load_project
from .plan import Plan
from .selfcheck import RANDOMIZED_NOTE, CheckReport, compares_file_bytes, rebuilt_elsewhere

if TYPE_CHECKING:
    from collections.abc import Mapping


def checkout_config(statement: Mapping[str, Any], start: Path) -> Path:
    """The eif.toml the statement names, in the checkout around ``start``; UsageError (one line)
    when the checkout's commit or the eif.toml's digest is not the provenance's."""
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    git = git_facts(start)
    base = find_project_dir(start) if git is None else git[0]
    config = Path(base / str(external["config"]["path"]))
    source = external.get("source")
    if source is not None:
        here = None if git is None else git[1]["commit"]
        if here != source["commit"]:
            msg = f"the provenance was built from commit {source['commit']}, this checkout is at {here}"
            raise UsageError(msg, key="FILE")
    try:
        digest = hash_file(config)
    except OSError:
        msg = f"{config}: no such eif.toml (the provenance names {external['config']['path']})"
        raise UsageError(msg, key="FILE") from None
    recorded = external["config"]["digest"]["sha256"]
    if digest != recorded:
        msg = f"{config}: sha256 {digest}, the provenance's eif.toml has {recorded}"
        raise UsageError(msg, key="FILE")
    return config


def reproduce(statement: Mapping[str, Any], start: Path) -> CheckReport:
    """Rebuild from scratch what ``statement`` describes and compare the EIF's sha256 (a PEM
    signer's or an unsigned EIF: bytes are deterministic) and every PCR."""
    config = checkout_config(statement, start)
    plan = Plan(load_project(config))
    arch = statement["predicate"]["buildDefinition"]["externalParameters"]["arch"]
    node = plan.eifs.get(arch)
    if node is None:
        msg = f"{config}: builds no {arch} EIF"
        raise UsageError(msg, key="FILE")
    subject = statement["subject"][0]["digest"]
    expected = {i["name"]: i["digest"]["sha384"] for i in statement["predicate"]["runDetails"]["byproducts"]}
    file_bytes = compares_file_bytes(plan)
    if file_bytes:
        expected["sha256"] = subject["sha256"]
    with rebuilt_elsewhere(plan) as copy_root:
        rebuilt = copy_root / node.out.eif.relative_to(plan.project.root)
        found = {
            k: v
            for k, v in json.loads(rebuilt.with_suffix(".pcr.json").read_text()).items()
            if k.startswith("PCR")
        }
        if file_bytes:
            found["sha256"] = hash_file(rebuilt)
    differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    lines = [
        f"{arch}: {k} differs: {expected.get(k)} in the provenance, {found.get(k)} rebuilt" for k in differ
    ]
    if not differ:
        lines.append(f"{arch}: " + ", ".join(f"{k} {v[:16]}…" for k, v in sorted(expected.items())))
        lines.append(
            "reproduced: "
            + ("the EIF and every PCR match" if file_bytes else f"every PCR matches ({RANDOMIZED_NOTE})")
        )
    else:
        lines.append("NOT reproduced: see the differences above")
    return CheckReport(not differ, "\n".join(lines))
