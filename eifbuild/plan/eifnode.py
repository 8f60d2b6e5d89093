"""The EIF node of a build plan: the EIF and its PCR JSON (store step ``eif``), built in the store,
then published into the output dir as hard links (else copies) with a stamp that makes the next
no-op run cheap.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .. import __version__, log
from ..errors import EifbuildError
from ..store import Step, TypedParams, canonical_json
from ..util.fsutil import atomic_write, hash_file, remember_digests, write_if_writable
from ._provenance import dependencies, git_facts, relative, zig_version
from .inputs import ResolvedImage
from .node import Artifact, Node, StoredNode, cached_results, digests
from .treedigest import FileDigests

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..arch import Arch
    from ..eif import BuildTime
    from ..oci import OciImage
    from ..store import Store, StoreEntry
    from .config import Project, Signing

BUILD_TOOL: Final = "eifbuild"
EIF_STEP_VERSION: Final = 1


@dataclass(frozen=True)
class EifParams(TypedParams):
    """An ``eif`` step (its inputs: ``kernel``, ``ramdisk/<i>`` in order, maybe ``kernel_config``
    and ``certificate``): the EIF's cmdline, metadata and whether it is ``signed`` (with the key of
    the certificate input)."""

    KIND: ClassVar[str] = "eif"
    VERSION: ClassVar[int] = EIF_STEP_VERSION

    arch: Arch
    cmdline: str
    name: str
    image_version: str  # "version" is the step's
    build_time: BuildTime
    build_tool: str
    build_tool_version: str
    custom: Mapping[str, Any]
    signed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "cmdline": self.cmdline,
            "name": self.name,
            "version": self.image_version,
            "build_time": self.build_time.text,
            "build_tool": self.build_tool,
            "build_tool_version": self.build_tool_version,
            "custom": dict(self.custom),
            "signed": self.signed,
        }


@dataclass(frozen=True)
class Published:
    """Where an EIF and its PCR JSON are published (the project's output dir)."""

    eif: Path
    pcrs: Path
    provenance: Path  # the in-toto statement
    envelope: Path  # the statement in a DSSE envelope, when the project signs


def _image_facts(image: OciImage) -> dict[str, str]:
    """The app image as eif.toml names it, the digest the build resolved it to and its platform
    manifest (unmeasured metadata: the rootfs digest in ``inputs`` is what the PCRs cover)."""
    facts = {"ref": image.ref, "manifest": image.manifest_digest, "platform": image.platform}
    if image.index_digest is not None:
        facts["index"] = image.index_digest
    return facts


class EifNode(StoredNode[Artifact]):
    """The EIF and its PCR JSON: built in the store, then linked (or copied) into the output dir."""

    def __init__(
        self,
        *,
        project: Project,
        arch: Arch,
        kernel: Node[Artifact],
        kernel_config: Node[Artifact] | None,
        cmdline: str | Node[Artifact],
        ramdisks: Sequence[Node[Artifact]],
        certificate: Node[Artifact] | None,
        labels: Mapping[str, Node[Any]],
        recipe_digests: Mapping[str, str],
        store: Store,
        recipe_paths: Mapping[str, Path] | None = None,
    ) -> None:
        super().__init__(store)
        self.project = project
        self.arch = arch
        self.kernel = kernel
        self.kernel_config = kernel_config
        self.cmdline = cmdline
        self.ramdisks = tuple(ramdisks)
        self.certificate = certificate
        self.labels = dict(labels)
        self.recipe_digests = dict(recipe_digests)
        self.recipe_paths = dict(recipe_paths or {})
        named = [
            kernel,
            kernel_config,
            *ramdisks,
            certificate,
            cmdline if isinstance(cmdline, Node) else None,
        ]
        self.deps = tuple(dict.fromkeys(n for n in (*named, *labels.values()) if n is not None))
        stem = f"{project.name}-{arch}"
        self.out = Published(
            project.output / f"{stem}.eif",
            project.output / f"{stem}.pcr.json",
            project.output / f"{stem}.intoto.json",
            project.output / f"{stem}.intoto.jsonl",
        )
        self.task = f"eif:{arch}"
        self.doc = f"write {os.path.relpath(self.out.eif, project.root)} and its PCRs"
        self.measurements: dict[str, str] = {}

    def _cmdline_text(self) -> str | None:
        if isinstance(self.cmdline, str):
            return self.cmdline
        found = self.cmdline.cached()
        if found is None:
            return None
        # like nitro-cli, which trims its blobs/<arch>/cmdline file
        return found.path.read_text(encoding="utf-8").strip()

    def _custom_metadata(self) -> dict[str, Any] | None:
        inputs = cached_results(self.labels)
        if inputs is None:
            return None
        ours: dict[str, Any] = {
            "inputs": dict(sorted(digests(inputs).items())),
            "recipes": self.recipe_digests,
        }
        rootfs = inputs.get("rootfs")
        if isinstance(rootfs, ResolvedImage):  # which image: `diff` can then say app:v1 → app:v2
            ours["image"] = _image_facts(rootfs.image)
        return {**(self.project.metadata or {}), BUILD_TOOL: ours}

    def _named_inputs(self) -> dict[str, Node[Artifact]]:
        named: dict[str, Node[Artifact]] = {"kernel": self.kernel}
        named.update({f"ramdisk/{i}": r for i, r in enumerate(self.ramdisks)})
        if self.kernel_config is not None:
            named["kernel_config"] = self.kernel_config
        if self.certificate is not None:
            named["certificate"] = self.certificate
        return named

    def step(self) -> Step[EifParams] | None:
        inputs = cached_results(self._named_inputs())
        cmdline = self._cmdline_text()
        custom = self._custom_metadata()
        if inputs is None or cmdline is None or custom is None:
            return None
        params = EifParams(
            arch=self.arch,
            cmdline=cmdline,
            name=self.project.name,
            image_version=self.project.version,
            build_time=self.project.build_time,
            build_tool=BUILD_TOOL,
            build_tool_version=__version__,
            custom=custom,
            signed=self.certificate is not None,
        )
        return Step(params, digests(inputs))

    def _stamp_path(self) -> Path:
        return self.store.root / "stamps" / f"{FileDigests.path_id(self.out.eif)}.json"

    def _published(self, key: str) -> bool:
        """The output dir holds exactly what the store entry ``key`` holds (by stamp, no hashing)."""
        try:
            stamp = json.loads(self._stamp_path().read_bytes())
            return bool(stamp == self._stamp(key))
        except (OSError, ValueError):
            return False

    def _stamp(self, key: str) -> dict[str, Any]:
        """What the stamp file holds: the key and the fingerprints of the published outputs."""
        stamp = {"key": key, "eif": _fingerprint(self.out.eif), "pcrs": _fingerprint(self.out.pcrs)}
        git = None if self._git is None else [str(self._git[0]), self._git[1]]
        stamp["provenance"] = [_fingerprint(self.out.provenance), git]
        if self._provenance_key() is not None:
            stamp["envelope"] = _fingerprint(self.out.envelope)
        return stamp

    @functools.cached_property
    def _git(self) -> tuple[Path, dict[str, Any]] | None:
        ignore = (self.project.output.resolve(), self.store.root.resolve())
        return git_facts(self.project.root, ignore=ignore)

    def targets(self) -> list[Path]:
        """What ``doit eif`` writes (and ``doit clean`` removes): the EIF, its PCRs, its provenance."""
        signed = self._provenance_key() is not None
        return [self.out.eif, self.out.pcrs, self.out.provenance, *([self.out.envelope] if signed else [])]

    def _provenance_key(self) -> Signing | None:
        return self.project.provenance or self.project.sign

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        if entry is None or not self._published(entry.key):
            return None
        return self._use(entry)

    def _realize(self) -> Artifact:
        step = self._step_after_deps()
        entry = self.store.get(step.key)
        if entry is not None and self.store.check(entry):
            # the published copy is a hard link: an edit of it in place reaches the store too
            log.warn(f"store entry {entry.key[:12]} of {self.task} was modified; building it again")
            self.store.remove(entry.key)
            entry = None
        if entry is None:
            log.step(f"write the {self.arch} EIF")
            files = {name: node.require().path for name, node in self._named_inputs().items()}
            entry = self.store.realize(step, functools.partial(self._write, files))
        self._publish(entry)
        return self._use(entry)

    def _use(self, entry: StoreEntry) -> Artifact:
        self.measurements = dict(entry.meta.get("pcrs", {}))
        return Artifact(self.out.eif, entry.digest("image.eif"), entry.key)

    def _write(self, files: Mapping[str, Path], params: EifParams, out: Path) -> dict[str, Any]:
        """The step's action: ``files`` are its inputs' files by input name."""
        from ..eif import PackRequest, open_signer, pack  # noqa: PLC0415 - format and crypto code only when writing

        signer = None
        if params.signed:  # with the key of the certificate input (a secret: never in a key)
            if self.project.sign is None:  # pragma: no cover - the plan adds a certificate only with [sign]
                msg = f"{self.task}: a signed EIF needs eif.toml's [sign] key"
                raise EifbuildError(msg)
            signer = open_signer(files["certificate"], self.project.sign.key)
        count = sum(1 for name in files if name.startswith("ramdisk/"))
        request = PackRequest(
            output=out / "image.eif",
            kernel=files["kernel"],
            cmdline=params.cmdline,
            ramdisks=[files[f"ramdisk/{i}"] for i in range(count)],
            arch=params.arch,
            name=params.name,
            version=params.image_version,
            build_time=params.build_time,
            build_tool=params.build_tool,
            build_tool_version=params.build_tool_version,
            kernel_config=files.get("kernel_config"),
            custom=dict(params.custom),
            signer=signer,
        )
        measurements = pack(request)
        # one read for both digests, on two threads: the store's record (sha256, when it scans the
        # outputs) and the provenance's subject (sha384) then find them instead of reading 1 GiB twice
        remember_digests(out / "image.eif", ("sha256", "sha384"))
        (out / "pcr.json").write_text(json.dumps(measurements.to_json(), indent=2) + "\n")
        return {"pcrs": measurements.pcrs()}

    def _publish(self, entry: StoreEntry) -> None:
        """Link (else copy) the store's files into the output dir, atomically, and stamp them."""
        for name, target in (("image.eif", self.out.eif), ("pcr.json", self.out.pcrs)):
            _link_or_copy(entry.file(name), target)
        self.measurements = dict(entry.meta.get("pcrs", {}))
        self._write_provenance(entry)
        write_if_writable(self._stamp_path(), canonical_json(self._stamp(entry.key)))  # read-only: none

    def _write_provenance(self, entry: StoreEntry) -> None:
        """The in-toto statement (and, when the project signs, its DSSE envelope) of the EIF."""
        from .. import provenance  # noqa: PLC0415

        git = self._git
        base = self.project.root if git is None else git[0]
        recipes = {
            name: (self.recipe_paths[name], digest)
            for name, digest in self.recipe_digests.items()
            if name in self.recipe_paths
        }
        facts = provenance.BuildFacts(
            eif_name=self.out.eif.name,
            eif_digests={"sha256": entry.digest("image.eif"), "sha384": hash_file(self.out.eif, "sha384")},
            config_path=relative(self.project.path, base),
            config_sha256=hash_file(self.project.path),
            arch=self.arch,
            build_time=self.project.build_time.text,
            eifbuild_version=__version__,
            zig_version=zig_version(),
            pcrs=self.measurements,
            dependencies=dependencies(self.deps, base=base, project=self.project, recipes=recipes),
            git=None if git is None else git[1],
        )
        payload = provenance.statement_bytes(provenance.build_statement(facts))
        with atomic_write(self.out.provenance) as fh:
            fh.write(payload)
        key = self._provenance_key()
        if key is None:
            if os.path.lexists(self.out.envelope):
                os.unlink(self.out.envelope)  # not signed anymore: no stale envelope
            return
        from ..eif import open_signer  # noqa: PLC0415

        line = provenance.envelope_line(
            provenance.sign_envelope(payload, open_signer(key.certificate, key.key))
        )
        with atomic_write(self.out.envelope) as fh:
            fh.write(line)

    def summary(self) -> str:
        from ..eif import min_enclave_memory_mib  # noqa: PLC0415

        size = self.out.eif.stat().st_size
        pcrs = "\n".join(f"  {name}: {value}" for name, value in self.measurements.items())
        rel = os.path.relpath(self.out.eif, Path.cwd())
        memory = min_enclave_memory_mib(size)
        return f"{rel} ({size:,} bytes; run it with at least {memory} MiB of enclave memory)\n{pcrs}"


def _fingerprint(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or links not allowed: copy
            with open(source, "rb") as src, atomic_write(tmp) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
