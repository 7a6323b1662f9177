"""The package version (its own module: the collection writer records it in manifests)."""

__version__ = "0.1.0"
