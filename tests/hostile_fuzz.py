"""Fuzz targets of issue #23, run by tests/hostile/test_fuzz.py in a child process under RLIMIT_AS,
RLIMIT_FSIZE and a timeout (``python -c 'import hostile_fuzz; hostile_fuzz.run(N)'``): every target
either succeeds or raises one of eifbuild's own errors, whose text is one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import cbor2
from hostile_helpers import assemble, eif_with, metadata_with_custom, newc, seed_sections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eifbuild.eif import describe, read_eif
from eifbuild.errors import EifbuildError
from eifbuild.oci._importer import descriptors
from eifbuild.oci._transport import ImageArchive
from eifbuild.plan.config import parse_project
from eifbuild.ramdisk import read_cpio
from eifbuild.store.remote.manifest import ManifestRefused, open_manifest
from eifbuild.util.bounded import decode_json

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
VALUES = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=30
)
KEYS = st.sampled_from(["Config", "Layers", "RepoTags", "rootfs", "diff_ids", "manifest", "format", "key", "step",
                        "outputs", "digest", "size", "mediaType", "platform", "annotations", "os", "architecture"])
SHAPED = st.recursive(
    SCALARS | KEYS, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=5), max_leaves=40
)
HOSTILE_TEXT = st.sampled_from(["[" * 5000, '{"a":' * 3000, "1e999999999", "-1e400", "NaN", "Infinity",
                                "9" * 5000, '"\\ud800"', "\ufeff{}", "{" , "[1,]"])


def json_texts() -> st.SearchStrategy[bytes]:
    """JSON documents: well-formed shapes, hostile fragments, and either with a few bytes changed."""
    def dump(value: Any) -> bytes:
        return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")

    base = st.one_of(SHAPED.map(dump), VALUES.map(dump), HOSTILE_TEXT.map(str.encode),
                     st.tuples(SHAPED.map(dump), HOSTILE_TEXT).map(lambda t: t[0][:-1] + t[1].encode() + t[0][-1:]))
    return st.tuples(base, st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(max_size=3)), max_size=3)).map(
        _mutate
    )


def _mutate(item: tuple[bytes, list[tuple[int, bytes]]]) -> bytes:
    data = bytearray(item[0])
    for offset, new in item[1]:
        at = offset % max(len(data), 1)
        data[at : at + len(new)] = new
    return bytes(data)


def _one_line(exc: BaseException, kinds: tuple[type[Exception], ...] = (EifbuildError,)) -> None:
    assert isinstance(exc, kinds), repr(exc)
    assert "\n" not in str(exc).strip(), str(exc)




@given(json_texts())
def fuzz_json(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_json(data)


@given(json_texts())
def fuzz_custom_metadata(custom: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.eif"
        path.write_bytes(eif_with(metadata=metadata_with_custom(custom)))
        try:
            describe(read_eif(path))
        except Exception as exc:
            _one_line(exc)


@given(st.recursive(SCALARS | st.binary(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=20) | st.integers(), c, max_size=3), max_leaves=20))
def fuzz_cbor_signature(value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.eif"
        flags, sections = seed_sections()
        path.write_bytes(assemble(flags, [*sections, (4, cbor2.dumps(value))]))
        try:
            describe(read_eif(path))
        except Exception as exc:
            _one_line(exc)


MEMBERS = st.lists(
    st.tuples(st.text(min_size=1, max_size=300), st.sampled_from([0o100644, 0o040755, 0o120777, 0o020644, 0]),
              st.binary(max_size=64)), max_size=5)


@given(MEMBERS, st.lists(st.tuples(st.integers(0, 1 << 12), st.binary(min_size=1, max_size=8)), max_size=4))
def fuzz_cpio(members: list[tuple[str, int, bytes]], edits: list[tuple[int, bytes]]) -> None:
    data = _mutate((newc(members), edits))
    try:
        for _ in read_cpio(io.BytesIO(data), data=True, hashed=True):
            pass
    except Exception as exc:
        _one_line(exc)


TOML_PARTS = st.sampled_from([
    "[eif]\n", "name = \"a\"\n", "name = \"../x\"\n", "arch = \"x86_64\"\n", "arch = [1]\n", "build_time = 9223372036854775807\n",
    "metadata = \"/dev/zero\"\n", "metadata = { a = inf }\n", "output = \"/\"\n", "[app]\n", "cmd = [\"/a\"]\n",
    "files = { \"/a\" = { text = \"x\" } }\n", "rootfs = \"..\"\n", "a = " + "[" * 3000 + "\n", "[cache]\n",
    "remote = \"s3://b/p\"\n", "endpoint_url = \"http://[::1\"\n", "[bootstrap]\n", "kernel = { path = \"/etc/passwd\" }\n",
    "oci = \"x@sha256:zz\"\n", "[sign]\n", "key = 5\n", "\x00", "\"\"\"", "x = 1e999\n",
])


@given(st.lists(TOML_PARTS, max_size=12))
def fuzz_eif_toml(parts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            parse_project("".join(parts), Path(tmp) / "eif.toml")
        except Exception as exc:
            _one_line(exc)


@given(json_texts() | SHAPED.map(lambda v: json.dumps({"manifest": v}).encode()))
def fuzz_remote_manifest(data: bytes) -> None:
    try:
        open_manifest(data, key="k", trusted={})
    except ManifestRefused as exc:
        _one_line(exc, (ManifestRefused,))


@given(SHAPED)
def fuzz_oci_descriptors(doc: Any) -> None:
    try:
        descriptors(doc if isinstance(doc, dict) else {"manifests": doc}, "manifests", "index")
    except Exception as exc:
        _one_line(exc)


@given(json_texts() | SHAPED.map(lambda v: json.dumps([v]).encode()), json_texts() | SHAPED.map(
    lambda v: json.dumps({"rootfs": v}).encode()))
def fuzz_docker_save(manifest: bytes, config: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "save.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in (("manifest.json", manifest), ("config.json", config), ("Config", config)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        try:
            with ImageArchive(path) as archive:
                archive.index()
        except Exception as exc:
            _one_line(exc)


TARGETS = {name: obj for name, obj in globals().items() if name.startswith("fuzz_")}


def run(examples: int, names: list[str] | None = None) -> None:
    """Run the targets (all, or ``names``) for ``examples`` examples each, in this process."""
    os.environ.setdefault("EIFBUILD_MAX_INPUT_SIZE", "64M")
    settings.register_profile(
        "hostile", deadline=None, suppress_health_check=list(HealthCheck), database=None, max_examples=examples
    )
    settings.load_profile("hostile")
    for name in names or sorted(TARGETS):
        TARGETS[name]()
        print(f"{name}: {examples} examples", file=sys.stderr)
