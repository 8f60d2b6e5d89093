"""The provenance of an EIF: an in-toto Statement v1 whose predicate is SLSA provenance v1.

:func:`build_statement` makes it from facts the build knows (no clock, host, user or machine path:
the same commit built anywhere gives the same bytes, :func:`statement_bytes`); :func:`check_statement`
checks the shape a reader relies on (the spec's required fields and types).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..errors import ProvenanceError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://slsa.dev/provenance/v1"
BUILD_TYPE_VERSION: Final = 1
BUILD_TYPE: Final = f"urn:eifbuild:build-type:eif:v{BUILD_TYPE_VERSION}"
BUILDER_ID: Final = "urn:eifbuild:builder"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
_HEX: Final = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class Dependency:
    """One resolved dependency: a SLSA ResourceDescriptor with a ``uri``, a ``digest`` and a ``name``."""

    uri: str
    digest: Mapping[str, str]
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri, "digest": dict(sorted(self.digest.items()))}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class BuildFacts:
    """What a provenance statement says about one EIF build."""

    eif_name: str
    eif_digests: Mapping[str, str]  # sha256, sha384 of the EIF file
    config_path: str  # eif.toml, relative to the repo (or the project dir)
    config_sha256: str
    arch: str
    build_time: str
    eifbuild_version: str
    zig_version: str
    pcrs: Mapping[str, str]  # PCR0, PCR1, PCR2 (PCR8 when signed) → hex sha384
    dependencies: Sequence[Dependency] = ()
    git: Mapping[str, Any] | None = field(default=None)  # {"commit": hex, "clean": bool}


def build_statement(facts: BuildFacts) -> dict[str, Any]:
    """The in-toto statement with the SLSA provenance v1 predicate for ``facts``."""
    external: dict[str, Any] = {
        "config": {"path": facts.config_path, "digest": {"sha256": facts.config_sha256}},
        "arch": facts.arch,
    }
    if facts.git is not None:
        external["source"] = dict(facts.git)
    unique = {json.dumps(d.to_json(), sort_keys=True): d for d in facts.dependencies}
    deps = [d.to_json() for d in sorted(unique.values(), key=_dependency_order)]
    byproducts = [
        {"name": name, "digest": {"sha384": value}}
        for name, value in sorted(facts.pcrs.items(), key=_pcr_order)
    ]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": facts.eif_name, "digest": dict(sorted(facts.eif_digests.items()))}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {
                    "build_time": facts.build_time,
                    "eifbuild_version": facts.eifbuild_version,
                    "zig_version": facts.zig_version,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": f"{BUILDER_ID}@{facts.eifbuild_version}"},
                "metadata": {},
                "byproducts": byproducts,
            },
        },
    }


def _dependency_order(dep: Dependency) -> tuple[str, str, str]:
    return (dep.uri, dep.name or "", json.dumps(dep.digest, sort_keys=True))


def _pcr_order(item: tuple[str, str]) -> int:
    return int(item[0].removeprefix("PCR")) if item[0].removeprefix("PCR").isdigit() else 1 << 30


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """The file's bytes: sorted keys, two-space indent, a final newline (the same on every machine)."""
    return (json.dumps(statement, indent=2, sort_keys=True) + "\n").encode()


def check_statement(doc: Any) -> dict[str, Any]:
    """``doc`` if it is an in-toto Statement v1 with a SLSA provenance v1 predicate, else
    :class:`ProvenanceError` naming the first field that is wrong."""
    _expect(isinstance(doc, dict), "the statement is not a JSON object")
    _expect(doc.get("_type") == STATEMENT_TYPE, f"_type is not {STATEMENT_TYPE}")
    subjects = doc.get("subject")
    _expect(isinstance(subjects, list) and len(subjects) > 0, "subject: expected a non-empty list")
    for i, subject in enumerate(subjects):
        _expect(isinstance(subject, dict), f"subject[{i}]: expected an object")
        _check_digest(subject.get("digest"), f"subject[{i}].digest")
    _expect(doc.get("predicateType") == PREDICATE_TYPE, f"predicateType is not {PREDICATE_TYPE}")
    predicate = doc.get("predicate")
    _expect(isinstance(predicate, dict), "predicate: expected an object")
    definition = predicate.get("buildDefinition")
    _expect(isinstance(definition, dict), "predicate.buildDefinition: expected an object")
    _expect(isinstance(definition.get("buildType"), str), "buildDefinition.buildType: expected a URI")
    _expect(isinstance(definition.get("externalParameters"), dict), "buildDefinition.externalParameters")
    for i, dep in enumerate(definition.get("resolvedDependencies", [])):
        where = f"resolvedDependencies[{i}]"
        _expect(isinstance(dep, dict) and any(k in dep for k in ("uri", "digest", "content")), where)
        if "digest" in dep:
            _check_digest(dep["digest"], f"{where}.digest")
    run = predicate.get("runDetails")
    _expect(isinstance(run, dict), "predicate.runDetails: expected an object")
    builder = run.get("builder")
    _expect(isinstance(builder, dict) and isinstance(builder.get("id"), str), "runDetails.builder.id")
    for i, item in enumerate(run.get("byproducts", [])):
        _expect(isinstance(item, dict), f"runDetails.byproducts[{i}]: expected an object")
        _check_digest(item.get("digest"), f"runDetails.byproducts[{i}].digest")
    return dict(doc)


def byproduct_pcrs(statement: Mapping[str, Any]) -> dict[str, str]:
    """The PCRs the statement records: ``{"PCR0": hex, …}``."""
    items = statement["predicate"]["runDetails"].get("byproducts", [])
    return {i["name"]: i["digest"]["sha384"] for i in items if str(i.get("name", "")).startswith("PCR")}


def _check_digest(value: Any, where: str) -> None:
    ok = isinstance(value, dict) and len(value) > 0
    ok = ok and all(isinstance(k, str) and isinstance(v, str) and _HEX.match(v) for k, v in value.items())
    _expect(ok, f"{where}: expected a DigestSet (algorithm → lowercase hex)")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        msg = f"statement: {message}"
        raise ProvenanceError(msg)
