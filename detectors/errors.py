"""The exception hierarchy shared by the detectors and the daemon.

Every error atalaia raises on purpose derives from :class:`AtalaiaError` and
from the built-in exception it most resembles, so callers can catch either.
"""

from __future__ import annotations

__all__ = [
    "AtalaiaError",
    "ParameterError",
    "ConfigError",
    "SourceError",
    "SourceTimeout",
    "LabelCardinalityError",
    "SOURCE_ERROR_REASONS",
]

#: the ``reason`` of every :class:`SourceError` atalaia raises (the ``reason`` label of
#: ``atalaia_source_errors_total``, whose series are created at zero for each so that the first error
#: of a kind is an increase a rule can see)
SOURCE_ERROR_REASONS = ("corrupt", "missing", "missing_column", "retyped_column", "timeout", "unreachable", "read")


class AtalaiaError(Exception):
    """Base class of every error atalaia raises deliberately."""


class ParameterError(AtalaiaError, ValueError):
    """A detector parameter is invalid.

    ``problems`` maps each bad parameter name to a message of the form
    ``"must be … got …"``; ``str()`` lists them all.
    """

    def __init__(self, detector: str, problems: dict[str, str]) -> None:
        self.detector = detector
        self.problems = dict(problems)
        text = "; ".join(f"{k}: {v}" for k, v in self.problems.items())
        super().__init__(f"detector {detector!r}: {text}")


class ConfigError(AtalaiaError, ValueError):
    """The configuration is invalid; ``problems`` holds ``(path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        n = len(lines)
        super().__init__(f"{head}{n} configuration problem{'s' if n != 1 else ''}\n  " + "\n  ".join(lines))


class SourceError(AtalaiaError, OSError):
    """Reading a sink failed; names the file and, where known, the column."""

    def __init__(self, message: str, *, path: str | None = None, column: str | None = None,
                 reason: str = "read") -> None:
        self.path = path
        self.column = column
        self.reason = reason
        parts = [message]
        if path:
            parts.append(f"file={path}")
        if column:
            parts.append(f"column={column}")
        super().__init__(" ".join(parts) if len(parts) == 1 else f"{message} ({', '.join(parts[1:])})")


class SourceTimeout(SourceError, TimeoutError):
    """A source did not answer within its configured timeout."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message, path=path, reason="timeout")


class LabelCardinalityError(AtalaiaError, ValueError):
    """A metric label would take more distinct values than the configured cap allows."""
