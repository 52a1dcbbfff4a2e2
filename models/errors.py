"""The one error hierarchy of journeyrec.

The CLI turns any ``JourneyrecError`` into one line on stderr and exit status 2; the service maps each
subclass to one HTTP status in one place (``service.errors``).
"""

from __future__ import annotations


class JourneyrecError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class DataError(JourneyrecError):
    """Input data is malformed. Carries where it was found so the message names file, line and column."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, column: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = ":".join(str(p) for p in (path, line) if p is not None)
        col = f" column {column!r}" if column else ""
        prefix = f"{where}{col}: " if where or col else ""
        super().__init__(f"{prefix}{message}")


class EmptyDatasetError(DataError):
    """The input held no usable rows after filtering."""


class ArtifactError(JourneyrecError):
    """A model directory is missing, incomplete, tampered with or of an unknown format."""


class InvalidInputError(JourneyrecError):
    """A request or option is out of range or inconsistent."""


class NotFoundError(JourneyrecError):
    """A named object (model version, item) does not exist."""


class StoreUnavailableError(JourneyrecError):
    """The state store (Redis) cannot be reached; nothing was written."""
