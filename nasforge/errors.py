"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""

from __future__ import annotations


class NasforgeError(Exception):
    """A user-facing error: bad input, a missing file, a refused operation.

    The message names the bad value and what was expected. The CLI prints it and exits with
    status 2 instead of showing a traceback. Values quoted from untrusted input (a shape read
    from a damaged file header, a long architecture text) can be huge, so a message longer than
    ``MAX_MESSAGE`` characters keeps its beginning and its end and says how much was left out.
    """

    MAX_MESSAGE = 1500

    def __str__(self) -> str:
        text = super().__str__()
        if len(text) <= self.MAX_MESSAGE:
            return text
        head, tail = text[:1000], text[-300:]
        return f"{head} ... [{len(text) - 1300:,} characters left out] ... {tail}"


class ConfigError(NasforgeError, ValueError):
    """A config key, value or component name is not valid."""


class DataError(NasforgeError):
    """A dataset is missing, malformed or does not match what was asked."""


class ArchitectureError(NasforgeError, ValueError):
    """An architecture text does not parse, or the architecture cannot fit the task."""


class RunError(NasforgeError):
    """A run directory cannot be used (locked, exists, missing, incompatible)."""


class MissingDependencyError(NasforgeError):
    """An optional package needed for this operation is not installed (the message names the extra)."""


def quote_text(text: str, limit: int = 120) -> str:
    """``repr(text)`` for an error message; a text longer than ``limit`` characters shows its
    first ``limit`` and says how long it is."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"...({len(text)} characters)"


class NasforgeWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints one line)."""
