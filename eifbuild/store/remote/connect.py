"""Wire a remote cache into a store: pull through its substituter hook, push through on_built."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .cache import RemoteCache
from .config import with_environment
from .push import push_after_build
from .substitute import pull_entry

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..local import Store
    from .config import CacheSettings


def attach(
    store: Store, settings: CacheSettings, *, environ: Mapping[str, str] | None = None, push: bool = False
) -> RemoteCache | None:
    """Use the remote of ``settings`` (after the environment's say) for ``store``; None when no
    remote is configured. ``push`` (or ``$EIFBUILD_REMOTE_CACHE_PUSH=1``) pushes each built step."""
    effective = with_environment(settings, environ)
    if not effective.enabled:
        return None
    cache = RemoteCache(effective)
    cache.bucket.client  # noqa: B018 - fail now, not mid-build, when boto3 is missing
    store.substituter = functools.partial(pull_entry, cache)
    if push or effective.push:
        key = cache.signing_key()
        store.on_built = functools.partial(push_after_build, cache, store, key)
    return cache
