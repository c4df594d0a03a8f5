"""The project's exception hierarchy.

Every error a user can cause derives from :class:`MedsegError`; the CLI prints those as one line and
exits non-zero, and anything else is a bug that deserves a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """Base class of every user-facing error; the CLI prints ``str(err)`` and exits with ``exit_code``."""

    exit_code = 1


class InputError(MedsegError):
    """A file or record the user gave us cannot be used (missing, corrupt, wrong label, ...)."""

    exit_code = 2

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class ManifestError(InputError):
    """One or more manifest rows are invalid; ``problems`` lists every one of them, not only the first."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(path, f"{len(self.problems)} problem(s) in manifest:\n  {shown}{more}")


class ConfigError(MedsegError):
    """A configuration key or value is wrong; the message names the dotted key and what is allowed."""

    exit_code = 3


class RegistryError(ConfigError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0]) if self.args else ""
