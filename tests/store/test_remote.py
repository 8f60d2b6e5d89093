"""The remote cache against real S3 APIs on 127.0.0.1 (moto in server mode, and Ceph RGW over HTTP
and HTTPS: the ``s3`` fixture): signed manifests, pull through the store's substituter hook, push,
tampered entries, a remote that goes away and racing pushers. Two separate stores stand for two
machines. The faults a real server cannot be made to produce use moto behind a proxy."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from s3_helpers import (
    THROWAWAY_AWS_ENV,
    CuttingProxy,
    Keys,
    MotoServer,
    S3Target,
    free_port,
    make_key,
    settings_for,
)

from eifbuild import log
from eifbuild.errors import ConfigError, RemoteCacheError
from eifbuild.plan.config import parse_project
from eifbuild.store import Step, Store
from eifbuild.store.remote import (
    CacheSettings,
    RemoteCache,
    attach,
    generate_key,
    push_entry,
    with_environment,
)
from eifbuild.store.remote.cache import blob_name, manifest_name
from eifbuild.store.remote.config import parse_s3_url
from eifbuild.store.remote.manifest import (
    ManifestRefused,
    SecretKey,
    body_of,
    open_manifest,
    sign,
    trusted_keys,
)
from eifbuild.store.step import RawParams

PAYLOAD = b"zig output " * 5000


@dataclass
class Recorder:
    lines: list[str] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.lines.append(f"* {message}")

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self.lines.append(f"warning: {message}")

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[log.Progress]:
        yield log.NullReporter().progress(description, total).__enter__()

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.lines if line.startswith("warning:")]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in THROWAWAY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("EIFBUILD_REMOTE_CACHE", "EIFBUILD_REMOTE_CACHE_PUSH", "EIFBUILD_REQUIRE_REMOTE"):
        monkeypatch.delenv(name, raising=False)


STEP = Step(RawParams("compile", 1, {"cflags": ["-O2"]}), {"init.c": "ab" * 32}, {"zig": "0.17.1"})


def build_into(calls: list[Path]) -> object:
    def build(_: RawParams, out: Path) -> dict[str, str]:
        calls.append(out)
        (out / "bin").mkdir()
        (out / "bin" / "init").write_bytes(PAYLOAD)
        (out / "bin" / "init").chmod(0o755)
        (out / "empty").mkdir()
        (out / "init").symlink_to("bin/init")
        return {"note": "built"}

    return build


def pushed_store(tmp_path: Path, settings: CacheSettings, keys: Keys) -> Store:
    """Machine A: builds STEP and pushes it."""
    store = Store(tmp_path / "a")
    entry = store.realize(STEP, build_into([]))  # type: ignore[arg-type]
    result = push_entry(RemoteCache(settings), store, entry, keys.secret)
    assert result.new
    assert result.uploaded_bytes == len(PAYLOAD)
    return store


def pull(tmp_path: Path, settings: CacheSettings, name: str = "b") -> tuple[Store, list[Path], Recorder]:
    """Machine B: an empty store with the remote attached; realizes STEP and records what ran."""
    store = Store(tmp_path / name)
    attach(store, settings)
    calls: list[Path] = []
    recorder = Recorder()
    with log.use(recorder):
        store.realize(STEP, build_into(calls))  # type: ignore[arg-type]
    return store, calls, recorder


def test_an_entry_built_and_pushed_on_one_machine_is_pulled_not_built_on_another(
    tmp_path: Path, remote: CacheSettings, keys: Keys
) -> None:
    a = pushed_store(tmp_path, remote, keys)
    b, calls, recorder = pull(tmp_path, remote)
    assert calls == []  # nothing was built on B
    theirs, ours = a.get(STEP.key), b.get(STEP.key)
    assert theirs is not None
    assert ours is not None
    assert ours.outputs == theirs.outputs
    assert ours.meta == {"note": "built"}
    assert ours.record["substituted"] == str(remote.remote)
    assert (ours.path / "empty").is_dir()
    assert ours.file("bin/init").read_bytes() == PAYLOAD
    assert b.check(ours) == []
    assert any("pulled compile" in line and "trusted by ci-1" in line for line in recorder.lines)
    assert recorder.warnings == []


def test_a_miss_builds_locally_quietly(tmp_path: Path, remote: CacheSettings) -> None:
    _, calls, recorder = pull(tmp_path, remote)
    assert len(calls) == 1
    assert recorder.warnings == []


def test_a_required_remote_makes_a_miss_an_error(tmp_path: Path, remote: CacheSettings) -> None:
    store = Store(tmp_path / "b")
    attach(store, with_environment(remote, {"EIFBUILD_REQUIRE_REMOTE": "1"}))
    with pytest.raises(RemoteCacheError, match="forbids building it here"):
        store.realize(STEP, build_into([]))  # type: ignore[arg-type]
    assert STEP.key not in store


def _tamper_blob(s3: S3Target, settings: CacheSettings) -> None:
    assert settings.remote is not None
    name = settings.remote.object_key(blob_name(_sha(PAYLOAD)))
    changed = bytearray(PAYLOAD)
    changed[100] ^= 1
    s3.client().put_object(Bucket=settings.remote.bucket, Key=name, Body=bytes(changed))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(s3: S3Target, settings: CacheSettings) -> tuple[str, dict[str, object]]:
    assert settings.remote is not None
    name = settings.remote.object_key(manifest_name(STEP.key))
    body = s3.client().get_object(Bucket=settings.remote.bucket, Key=name)["Body"].read()
    return name, json.loads(body)


def _refused_and_rebuilt(tmp_path: Path, settings: CacheSettings, reason: str) -> None:
    store, calls, recorder = pull(tmp_path, settings)
    assert len(calls) == 1, "the refused entry must be built locally"
    assert len(recorder.warnings) == 1, recorder.lines
    warning = recorder.warnings[0]
    assert str(settings.remote) in warning
    assert reason in warning
    assert "building locally" in warning
    entry = store.get(STEP.key)
    assert entry is not None
    assert "substituted" not in entry.record


def test_a_blob_changed_in_the_bucket_is_refused_and_rebuilt(
    tmp_path: Path, remote: CacheSettings, keys: Keys, s3: S3Target
) -> None:
    pushed_store(tmp_path, remote, keys)
    _tamper_blob(s3, remote)
    _refused_and_rebuilt(tmp_path, remote, "with sha256")


def test_a_manifest_resigned_by_an_untrusted_key_is_refused(
    tmp_path: Path, remote: CacheSettings, keys: Keys, s3: S3Target
) -> None:
    a = pushed_store(tmp_path, remote, keys)
    entry = a.get(STEP.key)
    assert entry is not None
    assert remote.remote is not None
    mallory = make_key(tmp_path, "mallory")
    body = body_of(entry)
    body["meta"] = {"note": "evil"}
    name, _ = _manifest(s3, remote)
    s3.client().put_object(Bucket=remote.remote.bucket, Key=name, Body=sign(body, mallory.secret))
    _refused_and_rebuilt(tmp_path, remote, "signed by: mallory")


def test_a_manifest_pointing_at_a_missing_blob_is_refused(
    tmp_path: Path, remote: CacheSettings, keys: Keys, s3: S3Target
) -> None:
    pushed_store(tmp_path, remote, keys)
    assert remote.remote is not None
    s3.client().delete_object(
        Bucket=remote.remote.bucket, Key=remote.remote.object_key(blob_name(_sha(PAYLOAD)))
    )
    _refused_and_rebuilt(tmp_path, remote, "is missing")


def test_an_unreachable_remote_warns_once_and_builds_locally(
    tmp_path: Path, moto_remote: CacheSettings
) -> None:
    remote = moto_remote
    closed = CacheSettings(remote=remote.remote, endpoint_url=f"http://127.0.0.1:{free_port()}")
    store = Store(tmp_path / "b")
    attach(store, closed)
    recorder = Recorder()
    calls: list[Path] = []
    with log.use(recorder):
        store.realize(STEP, build_into(calls))  # type: ignore[arg-type]
        store.realize(Step(RawParams("other", 1)), build_into(calls))  # type: ignore[arg-type]
    assert len(calls) == 2
    assert len(recorder.warnings) == 1, recorder.lines
    assert str(remote.remote) in recorder.warnings[0]
    assert "testing-not-a" not in "\n".join(recorder.lines)  # no credentials in messages


def test_the_remote_going_away_mid_download_builds_locally(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer
) -> None:
    remote = moto_remote
    pushed_store(tmp_path, remote, keys)
    with CuttingProxy(moto.port) as proxy:
        via_proxy = CacheSettings(
            remote=remote.remote, endpoint_url=proxy.endpoint, trusted_keys=remote.trusted_keys
        )
        store, calls, recorder = pull(tmp_path, via_proxy)
    assert proxy.cuts >= 1
    assert len(calls) == 1
    assert len(recorder.warnings) == 1, recorder.lines
    entry = store.get(STEP.key)
    assert entry is not None
    assert store.check(entry) == []
    assert not list((store.root / "tmp").iterdir())


def test_two_pushers_racing_the_same_key_leave_one_valid_entry(
    tmp_path: Path, remote: CacheSettings, keys: Keys
) -> None:
    stores = [Store(tmp_path / n) for n in ("a", "b")]
    entries = [s.realize(STEP, build_into([])) for s in stores]  # type: ignore[arg-type]
    barrier = threading.Barrier(2)
    results: list[object] = []

    def push(i: int) -> None:
        barrier.wait()
        results.append(push_entry(RemoteCache(remote), stores[i], entries[i], keys.secret))

    threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert sum(r.new for r in results) >= 1  # type: ignore[attr-defined]
    _, calls, recorder = pull(tmp_path, remote, "c")
    assert calls == []
    assert recorder.warnings == []


def test_the_second_conditional_create_gets_412_and_the_first_bytes_stay(
    remote: CacheSettings, s3: S3Target
) -> None:
    """``If-None-Match: *`` on the server itself: what keeps racing pushers from overwriting."""
    assert remote.remote is not None
    bucket, key = remote.remote.bucket, remote.remote.object_key(manifest_name(STEP.key))
    client = s3.client()
    client.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(Exception, match="PreconditionFailed") as raised:
        client.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412  # type: ignore[attr-defined]
    ours = RemoteCache(remote).bucket
    assert not ours.put(manifest_name(STEP.key), b"third", content_type="application/json")
    assert ours.put(manifest_name("0" * 64), b"new", content_type="application/json")
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"


def test_racing_creates_of_one_manifest_have_exactly_one_winner(remote: CacheSettings) -> None:
    bucket = RemoteCache(remote).bucket
    bucket.client  # noqa: B018 - boto3's client creation is not thread-safe; make it before the race
    barrier = threading.Barrier(6)
    won: list[bytes] = []

    def create(body: bytes) -> None:
        barrier.wait()
        if bucket.put(manifest_name(STEP.key), body, content_type="application/json"):
            won.append(body)

    threads = [threading.Thread(target=create, args=(b"writer %d" % i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1, won
    assert bucket.get_bytes(manifest_name(STEP.key)) == won[0]


@pytest.mark.parametrize("s3", ["ceph-https"], indirect=True)
def test_https_trusts_the_ca_bundle_from_settings_or_aws_ca_bundle(
    tmp_path: Path, s3: S3Target, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushing over HTTPS failed with botocore's default checksums (411 MissingContentLength from
    aws-chunked uploads); pulled here with the CA from ``[cache] ca_bundle``, then from
    ``$AWS_CA_BUNDLE``; without either, the certificate is refused in one warning."""
    settings = settings_for(s3, keys)
    pushed_store(tmp_path, settings, keys)
    _, calls, recorder = pull(tmp_path, settings, "b")
    assert calls == []
    assert recorder.warnings == []
    untrusted = replace(settings, ca_bundle=None)
    _, calls, recorder = pull(tmp_path, untrusted, "c")
    assert len(calls) == 1
    assert len(recorder.warnings) == 1, recorder.lines
    assert str(settings.remote) in recorder.warnings[0]
    assert "SSL" in recorder.warnings[0] or "certificate" in recorder.warnings[0]
    assert s3.ca_bundle is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", s3.ca_bundle)
    _, calls, recorder = pull(tmp_path, untrusted, "d")
    assert calls == []
    assert recorder.warnings == []


# -- manifests, keys and settings (no server) -----------------------------------------------------
def _entry(tmp_path: Path) -> tuple[Store, str]:
    store = Store(tmp_path / "s")
    entry = store.realize(STEP, build_into([]))  # type: ignore[arg-type]
    return store, entry.key


def test_manifest_verifies_with_the_trusted_key_only(tmp_path: Path, keys: Keys) -> None:
    store, key = _entry(tmp_path)
    entry = store.get(key)
    assert entry is not None
    data = sign(body_of(entry), keys.secret)
    manifest = open_manifest(data, key=key, trusted=trusted_keys([keys.trusted]))
    assert manifest.trusted_by == "ci-1"
    assert manifest.dirs == ("bin", "empty")
    with pytest.raises(ManifestRefused, match="signed by: ci-1"):
        open_manifest(data, key=key, trusted={})
    with pytest.raises(ManifestRefused, match="not for key"):
        open_manifest(data, key="0" * 64, trusted=trusted_keys([keys.trusted]))
    doc = json.loads(data)
    doc["manifest"]["outputs"]["bin/init"]["size"] += 1
    with pytest.raises(ManifestRefused, match="no valid signature"):
        open_manifest(json.dumps(doc).encode(), key=key, trusted=trusted_keys([keys.trusted]))
    doc = json.loads(data)
    doc["manifest"]["outputs"]["../escape"] = doc["manifest"]["outputs"].pop("bin/init")
    with pytest.raises(ManifestRefused, match="malformed"):
        open_manifest(json.dumps(doc).encode(), key=key, trusted=trusted_keys([keys.trusted]))


def test_a_pinned_source_file_needs_no_signature_but_its_hash_must_hold() -> None:
    pin = _sha(b"kernel")
    step = Step(
        RawParams(
            "source", 1, {"tree": False, "filename": "bzImage", "member": None, "strip": 0, "unpack": False}
        ),
        {"sha256": pin},
    )
    meta = {"tree": False, "filename": "bzImage", "sha256": pin, "size": 6, "fetched_sha256": pin}
    body = {
        "format": 1,
        "key": step.key,
        "step": step.describe(),
        "outputs": {"bzImage": {"type": "file", "sha256": pin, "size": 6, "executable": False}},
        "dirs": [],
        "meta": meta,
    }
    data = json.dumps({"manifest": body, "signatures": []}).encode()
    assert open_manifest(data, key=step.key, trusted={}).trusted_by == "content-addressed"
    body["outputs"]["bzImage"]["sha256"] = "0" * 64  # type: ignore[index]
    with pytest.raises(ManifestRefused, match="not signed"):
        open_manifest(json.dumps({"manifest": body}).encode(), key=step.key, trusted={})


def _image_manifest(step: Step[RawParams], name: str, data: bytes, **extra: object) -> bytes:
    out = {"type": "file", "sha256": _sha(data), "size": len(data), "executable": False, **extra}
    body = {
        "format": 1,
        "key": step.key,
        "step": step.describe(),
        "outputs": {name: out},
        "dirs": [],
        "meta": {},
    }
    return json.dumps({"manifest": body, "signatures": []}).encode()


def test_image_blobs_and_uncompressed_layers_need_no_signature_but_their_digest_must_hold() -> None:
    tar = b"an uncompressed layer"
    diff_id = f"sha256:{_sha(tar)}"
    layer = Step(RawParams("oci-layer", 1, {"digest": f"sha256:{_sha(b'gzipped')}", "diff_id": diff_id}))
    data = _image_manifest(layer, "layer.tar", tar)
    assert open_manifest(data, key=layer.key, trusted={}).trusted_by == "content-addressed"
    blob = Step(RawParams("oci-blob", 1, {"digest": f"sha256:{_sha(b'{}')}"}))
    assert open_manifest(_image_manifest(blob, "blob", b"{}"), key=blob.key, trusted={}).trusted_by
    refused = [
        _image_manifest(layer, "layer.tar", b"other bytes"),  # not what the diff_id names
        _image_manifest(layer, "blob", tar),  # not the layer's output
        _image_manifest(layer, "layer.tar", tar, executable=True),
        _image_manifest(Step(RawParams("oci-layer", 1, {"digest": diff_id})), "layer.tar", tar),  # no diff_id
    ]
    for bad in refused:
        key = json.loads(bad)["manifest"]["key"]
        with pytest.raises(ManifestRefused, match="not signed"):
            open_manifest(bad, key=key, trusted={})


def test_keygen_writes_nix_style_keys(tmp_path: Path) -> None:
    secret, public = generate_key("team-ci")
    name, _, raw = public.partition(":")
    assert name == "team-ci"
    assert len(base64.b64decode(raw)) == 32
    path = tmp_path / "k"
    path.write_text(secret)
    assert SecretKey.load(path).public_text() == public
    with pytest.raises(ConfigError, match="key name"):
        generate_key("bad name")


TOML = """
[eif]
name = "hello"
arch = "x86_64"
[app]
rootfs = "rootfs"
cmd = ["/bin/app"]
"""


def test_cache_table_is_validated_like_the_rest_of_eif_toml(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "eif.toml"
    project = parse_project(
        TOML + f'[cache]\nremote = "s3://bkt/p/"\nregion = "eu-west-1"\ntrusted_keys = ["{keys.public}"]\n',
        path,
    )
    assert str(project.cache.remote) == "s3://bkt/p"
    assert [key.text for key in project.cache.trusted_keys] == [keys.public]
    with pytest.raises(ConfigError, match=r"key 'cache.remot'.*did you mean 'remote'"):
        parse_project(TOML + '[cache]\nremot = "s3://b"\n', path)
    with pytest.raises(ConfigError, match=r"key 'cache.remote': expected an 's3://bucket/prefix'"):
        parse_project(TOML + '[cache]\nremote = "https://b"\n', path)
    with pytest.raises(ConfigError, match=r"key 'cache.trusted_keys\[0\]'"):
        parse_project(TOML + '[cache]\ntrusted_keys = ["ci:AAAA"]\n', path)
    relative = parse_project(TOML + '[cache]\nremote = "s3://bkt"\nca_bundle = "certs/ca.pem"\n', path)
    assert relative.cache.ca_bundle == str(tmp_path / "certs" / "ca.pem")
    with pytest.raises(ConfigError, match=r"key 'cache.ca_bundle'"):
        parse_project(TOML + "[cache]\nca_bundle = 1\n", path)
    with pytest.raises(ConfigError, match=r"ca_bundle: .*certs/ca.pem is not a file"):
        RemoteCache(relative.cache)


def test_environment_sets_overrides_or_turns_off_the_remote() -> None:
    base = CacheSettings(remote=parse_s3_url("s3://from-toml"))
    assert str(with_environment(base, {"EIFBUILD_REMOTE_CACHE": "s3://env/x"}).remote) == "s3://env/x"
    assert not with_environment(base, {"EIFBUILD_REMOTE_CACHE": ""}).enabled
    assert with_environment(base, {"EIFBUILD_REMOTE_CACHE_PUSH": "1"}).push
    assert with_environment(CacheSettings(), {}).remote is None
    with pytest.raises(ConfigError, match="EIFBUILD_REMOTE_CACHE"):
        with_environment(base, {"EIFBUILD_REMOTE_CACHE": "bucket"})


def test_without_boto3_a_configured_remote_is_one_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(RemoteCacheError, match=r"pip install 'eifbuild\[s3\]'"):
        attach(Store(tmp_path), CacheSettings(remote=parse_s3_url("s3://bkt")))


# -- hostile listings (#23 row 1): a trusted key's manifest must not become writes outside the store --
def _hostile_manifest(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer, outputs: dict[str, object]
) -> None:
    """Push PAYLOAD's blob, then put a manifest for STEP with ``outputs``, signed by the trusted key
    (on moto only: what is checked here is the client, not the server)."""
    remote, s3 = moto_remote, moto.target
    a = pushed_store(tmp_path, remote, keys)
    entry = a.get(STEP.key)
    assert entry is not None
    assert remote.remote is not None
    body = body_of(entry)
    body["outputs"] = outputs
    body["dirs"] = []
    name, _ = _manifest(s3, remote)
    s3.client().put_object(Bucket=remote.remote.bucket, Key=name, Body=sign(body, keys.secret))


def _through_a_link(outside: Path) -> dict[str, object]:
    blob = {"type": "file", "sha256": _sha(PAYLOAD), "size": len(PAYLOAD), "executable": False}
    return {"zz": {"type": "symlink", "target": str(outside)}, "zz/f": blob}


def test_a_trusted_manifest_writing_through_its_own_symlink_is_refused_as_corrupt(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _hostile_manifest(tmp_path, moto_remote, keys, moto, _through_a_link(outside))
    _refused_and_rebuilt(tmp_path, moto_remote, "'zz/f' goes through the symlink 'zz'")
    assert list(outside.iterdir()) == []


def test_the_puller_never_writes_through_a_symlink_even_if_the_listing_check_missed_it(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eifbuild.store.remote import manifest  # noqa: PLC0415

    monkeypatch.setattr(manifest, "listing_problems", lambda *_: [])
    outside = tmp_path / "outside"
    outside.mkdir()
    _hostile_manifest(tmp_path, moto_remote, keys, moto, _through_a_link(outside))
    _refused_and_rebuilt(tmp_path, moto_remote, "parent 'zz' is a symlink")
    assert list(outside.iterdir()) == []


def test_a_trusted_manifest_with_a_symlink_out_of_the_entry_is_refused(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer
) -> None:
    outputs = {"zz": {"type": "symlink", "target": "../../../../etc"}}
    _hostile_manifest(tmp_path, moto_remote, keys, moto, outputs)
    _refused_and_rebuilt(tmp_path, moto_remote, "symlink 'zz' to '../../../../etc' leads outside the tree")


def test_cache_verify_refuses_a_listing_through_a_symlink_and_writes_nothing_outside(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer
) -> None:
    from eifbuild.store.remote.substitute import verify_remote_entry  # noqa: PLC0415

    outside = tmp_path / "outside"
    outside.mkdir()
    _hostile_manifest(tmp_path, moto_remote, keys, moto, _through_a_link(outside))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    problem = verify_remote_entry(RemoteCache(moto_remote), STEP.key, scratch)
    assert problem is not None
    assert "goes through the symlink 'zz'" in problem
    assert list(outside.iterdir()) == []
