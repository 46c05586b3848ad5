"""What every kind of source shares: its common settings (:class:`BaseSource`), the connector protocol (list
what changed since a cursor, fetch a document, report deletions), the errors, and how credentials are read.

A kind is one module of this package holding its settings (a :class:`BaseSource` subclass whose
``open_connector`` builds its connector) and its connector; :mod:`knowledge.connectors.config` lists the kinds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from knowledge.connectors.schedule import Schedule


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
    #: The source's own permissions restrict the document to named people or groups: it is kept out of public
    #: channels whatever the source's ``visibility`` says.
    restricted: bool = False


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


class SourcesConfigError(ValueError):
    """The sources file (or one source in it) is not usable; the message names the source and the key."""


class BaseSource(BaseModel):
    """The settings every kind of source has. A kind subclasses it with ``kind: Literal["<kind>"]``, its own
    keys, and :meth:`open_connector`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    knowledge_set: str | None = None
    visibility: Literal["public", "restricted"] = "public"
    schedule: str = "manual"
    #: The knowledge base (index) it feeds; None = DESKMATE_KB_NAME.
    kb: str | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        Schedule.parse(value)
        return value

    @property
    def parsed_schedule(self) -> Schedule:
        return Schedule.parse(self.schedule)

    def public_settings(self) -> dict[str, Any]:
        """The source's settings as shown to operators: credentials appear only as the variable or file that
        holds them."""
        return self.model_dump(mode="json", exclude_none=True)

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        """This source's connector, credentials read now (``work_dir``: the source's own work folder).
        Raises :class:`SourcesConfigError` (e.g. a credential that is not set)."""
        raise NotImplementedError


class HttpSource(BaseSource):
    """The settings of a kind read over HTTP(S) (:class:`knowledge.connectors.http.HttpClient`): a kind whose
    vendor asks for other defaults redeclares the field."""

    timeout_s: float = Field(30.0, gt=0)
    #: 429 / 503 (and the vendor's own rate-limit answers) are retried after Retry-After this many times.
    max_retries: int = Field(3, ge=0)
    #: A longer Retry-After gives up at once rather than hold the sync.
    max_retry_after_s: float = Field(120.0, ge=0)


def read_secret(source: str, key: str, env_name: str | None, file: Path | None,
                environ: Mapping[str, str] | None = None) -> str | None:
    """The credential named by ``<key>_env`` or ``<key>_file`` (None when neither is set). Raises
    :class:`SourcesConfigError` naming the source and the key — never the value — when it is missing."""
    environ = os.environ if environ is None else environ
    if env_name:
        value = environ.get(env_name, "").strip()
        if not value:
            raise SourcesConfigError(f"source '{source}': {key}_env names {env_name}, which is not set")
        return value
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SourcesConfigError(f"source '{source}': {key}_file {file} cannot be read "
                                     f"({exc.strerror or exc.__class__.__name__})") from exc
        if not value:
            raise SourcesConfigError(f"source '{source}': {key}_file {file} is empty")
        return value
    return None
