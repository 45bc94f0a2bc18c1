"""The package version, in one place (read by the manifest, cards and stores)."""

__version__ = "0.1.0"
