"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations


class FedclError(Exception):
    """A problem with the user's input (config, names, files) that they can fix."""


class ConfigError(FedclError):
    """An invalid configuration key or value."""


class DataError(FedclError):
    """A missing, unreadable or corrupt data file."""
