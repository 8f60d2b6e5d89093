"""Wire a remote cache into a store: pull through its substituter hook, push through on_built."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .cache import RemoteCache
from .push import push_after_build
from .substitute import pull_entry

if TYPE_CHECKING:
    from ..local import Store
    from .config import CacheSettings


def attach(store: Store, settings: CacheSettings, *, push: bool = False) -> RemoteCache | None:
    """Use the remote of ``settings`` for ``store``; None when no remote is configured. The caller
    gave the environment its say (:func:`~.config.with_environment`: the one place that reads it).
    ``push`` (or ``$EIFBUILD_REMOTE_CACHE_PUSH=1``, as ``settings.push``) pushes each built step."""
    if not settings.enabled:
        return None
    cache = RemoteCache(settings)
    cache.bucket.client  # noqa: B018 - fail now, not mid-build, when boto3 is missing
    store.substituter = functools.partial(pull_entry, cache)
    if push or settings.push:
        key = cache.signing_key()
        store.on_built = functools.partial(push_after_build, cache, store, key)
    return cache
