"""The connector protocol: list what changed since a cursor, fetch a document, report deletions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SourceError(Exception):
    """The source as a whole cannot be read now (unreachable, refused, misconfigured): the sync fails, the
    mirror and the index keep their last good state."""


class FetchError(Exception):
    """One document cannot be fetched now: recorded as an error of the run and retried on the next sync."""


@dataclass(frozen=True)
class DocumentRef:
    """A document as the source lists it.

    ``path`` is its path inside the source, with the file extension that says its format (``it/vpn.md``);
    ``version`` changes whenever its content does (a blob sha, an ETag, a modification time); ``location`` is
    where a reader finds it in its own system (a URL), when there is one."""

    path: str
    version: str
    location: str | None = None


@dataclass
class Changes:
    """What changed since a cursor. ``complete``: ``changed`` lists every document of the source (a first sync,
    or a source without change tracking), so anything else in the mirror was deleted."""

    changed: list[DocumentRef]
    deleted: list[str]
    cursor: str
    complete: bool = False
    #: Documents the source lists but the connector will not read (too large, unsupported), with the reason.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Documents that could not be checked now (kept as they were, retried next time).
    errors: list[str] = field(default_factory=list)


class Connector(Protocol):
    """What every kind of source implements (one module per kind in this package)."""

    @property
    def local_root(self) -> Path | None:
        """A folder that already holds the source's documents (the ``folder`` kind), read in place instead of
        mirrored; None for remote sources."""
        ...

    def changes(self, cursor: str | None) -> Changes:
        """What changed since ``cursor`` (None: everything). Raises :class:`SourceError`."""
        ...

    def fetch(self, ref: DocumentRef) -> bytes:
        """The content of one listed document. Raises :class:`FetchError`."""
        ...
