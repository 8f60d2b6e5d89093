"""Private helpers shared by the packages: files, background work, tree paths, TOML."""
