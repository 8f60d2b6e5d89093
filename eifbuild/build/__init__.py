"""The build plan: eif.toml, the nodes of the plan, rootfs fingerprints, the self-check."""
