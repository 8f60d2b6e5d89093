"""A shared build cache on S3: signed manifests, pull into the store, push from it (issue #16)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...util.lazy import lazy_face

if TYPE_CHECKING:
    from .cache import RemoteCache
    from .config import REMOTE_ENV, CacheSettings, parse_cache_table, with_environment
    from .connect import attach
    from .manifest import generate_key
    from .pruning import PruneReport, prune
    from .push import push_entry
    from .substitute import verify_remote_entry

EXPORTS = {
    "RemoteCache": ".cache",
    "REMOTE_ENV": ".config",
    "CacheSettings": ".config",
    "parse_cache_table": ".config",
    "with_environment": ".config",
    "attach": ".connect",
    "generate_key": ".manifest",
    "PruneReport": ".pruning",
    "prune": ".pruning",
    "push_entry": ".push",
    "verify_remote_entry": ".substitute",
}

__all__ = [
    "REMOTE_ENV",
    "CacheSettings",
    "PruneReport",
    "RemoteCache",
    "attach",
    "generate_key",
    "parse_cache_table",
    "prune",
    "push_entry",
    "verify_remote_entry",
    "with_environment",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
