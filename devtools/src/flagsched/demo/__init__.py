"""`flagsched demo` (what `make run` runs): a seeded end-to-end run on real services."""
