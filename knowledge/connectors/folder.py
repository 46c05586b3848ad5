"""The ``folder`` kind: a local folder (today's ``deskmate ingest``), read in place."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from knowledge.connectors.base import BaseSource, Changes, Connector, DocumentRef, FetchError, SourceError
from knowledge.sources import discover


class FolderSource(BaseSource):
    kind: Literal["folder"]
    path: Path
    #: Base URL that makes a document's path citable (else DESKMATE_DOC_BASE_URL, else the path).
    base_url: str | None = None

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        return FolderConnector(self.path)


class FolderConnector:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def local_root(self) -> Path | None:
        return self.root

    def changes(self, cursor: str | None) -> Changes:
        """Every file, versioned by size and modification time (a folder has no change log, so the listing is
        complete and the cursor is a digest of it)."""
        if not self.root.is_dir():
            raise SourceError(f"folder not found: {self.root}")
        refs = []
        for path in discover(self.root):
            stat = path.stat()
            refs.append(DocumentRef(path.relative_to(self.root).as_posix(), f"{stat.st_size}:{stat.st_mtime_ns}"))
        digest = hashlib.sha256("\n".join(f"{r.path}\t{r.version}" for r in refs).encode()).hexdigest()
        if digest == cursor:
            return Changes(changed=[], deleted=[], cursor=digest)
        return Changes(changed=refs, deleted=[], cursor=digest, complete=True)

    def fetch(self, ref: DocumentRef) -> bytes:
        try:
            return (self.root / ref.path).read_bytes()
        except OSError as exc:
            raise FetchError(f"cannot be read ({exc.strerror or exc})") from exc
