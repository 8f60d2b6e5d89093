"""Pinned sources: recipes, eif.lock, downloads, archives, NAR hashes, fetching into the store."""
