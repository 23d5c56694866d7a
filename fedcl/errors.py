"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations


class FedclError(Exception):
    """A problem with the user's input (config, names, files) that they can fix. Its message is one line:
    line breaks (say, from a quoted value) are shown as ``\\n``."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"), *args)


class ConfigError(FedclError):
    """An invalid configuration key or value."""


class DataError(FedclError):
    """A missing, unreadable or corrupt data file."""
