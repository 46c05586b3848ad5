"""Syncing a source: bring its local mirror up to date through its connector, then build the knowledge base's
next index version from the mirrors of all the sources that feed it.

Layout of the work folder (``<data_dir>/sources``)::

    <name>/state.json     the connector's cursor and, per document, its version and location
    <name>/files/…        the mirror: the source's documents as files (not for the ``folder`` kind, read in place)
    <name>/repo.git       the git kind's bare clone
    <name>.lock           held while the source syncs (a second sync of the same source is refused, not queued)

A document's id is ``<source name>/<its path without extension>``, so sources never collide and deletions stay
within their source. A source that fails (unreachable, refused) leaves its mirror, and so its documents in the
index, as they were; one document that cannot be fetched is an error of the run, retried next time.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.core.log import get_logger
from knowledge.connectors.base import Connector, DocumentRef, FetchError, SourceError
from knowledge.connectors.config import FolderSource, SourceConfig, SourcesConfigError
from knowledge.index import IndexStore
from knowledge.ingest import NoDocuments, ingest_documents
from knowledge.shared_embedding import EmbeddingWork, ProgressCallback, embed_here
from knowledge.sources import DocumentSkipped, SkippedFile, SourceDocument, is_url, load_document, scan

log = get_logger(__name__)


class SourceBusy(SourceError):
    """The source is already being synced (by this or another process)."""


RUNBOOK = "playbooks/runbooks/source-change-held.md"


class ChangeHeld(SourceError):
    """The sync would delete or change too large a share of the source: nothing was applied."""


@dataclass(frozen=True)
class ChangeGuard:
    """Holds a sync that would delete or change more than ``max_share`` of a source's documents (a source of
    fewer than ``min_docs`` documents is not guarded; ``max_share`` >= 1 turns the guard off)."""

    max_share: float = 0.3
    min_docs: int = 10

    def check_readable(self, source: str, before: int, unreadable: list[str]) -> None:
        """Hold a sync in which more than ``max_share`` of the source's documents came back empty or unreadable
        (an export that broke, an expired session serving login pages as empty bodies)."""
        if self.max_share >= 1 or before < self.min_docs or len(unreadable) <= self.max_share * before:
            return
        raise ChangeHeld(
            f"held: {len(unreadable)} documents of source '{source}' came back empty or unreadable (it had "
            f"{before}; more than {self.max_share:.0%}), e.g. {', '.join(sorted(unreadable)[:3])}; nothing was "
            f"applied. Check the source; if this is intended, run `deskmate source sync {source} --force` "
            f"(runbook: {RUNBOOK})")

    def check(self, source: str, before: int, deleted: int, changed: int) -> None:
        if self.max_share >= 1 or before < self.min_docs:
            return
        share = (deleted + changed) / before
        if share > self.max_share:
            raise ChangeHeld(
                f"held: this sync would delete {deleted} and change {changed} of the {before} documents of source "
                f"'{source}' ({share:.0%} > {self.max_share:.0%}); nothing was applied. Check the source; if the "
                f"change is intended, run `deskmate source sync {source} --force` (runbook: {RUNBOOK})")


@dataclass
class SyncResult:
    """One sync run of one source: what an operator sees and what is recorded."""

    source: str
    kind: str
    kb: str
    started_at: datetime
    #: ok (a new index version) | unchanged | partial (some documents failed) | held (the change guard) | failed
    status: str = "ok"
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    index_version: int | None = None
    created_version: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["skipped"] = [asdict(s) for s in self.skipped]
        return data


@dataclass
class _State:
    cursor: str | None = None
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> {"version", "location"?, "restricted"?}

    @classmethod
    def load(cls, path: Path) -> _State:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        return cls(cursor=data.get("cursor"), docs=dict(data.get("docs") or {}))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cursor": self.cursor, "docs": self.docs}, indent=1, sort_keys=True))
        os.replace(tmp, path)


def kb_of(source: SourceConfig, default_kb: str) -> str:
    return source.kb or default_kb


def connector_for(source: SourceConfig, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                  max_bytes: int = 5_000_000) -> Connector:
    """The connector of ``source``'s kind (credentials read now). Raises SourcesConfigError."""
    return source.open_connector(work_dir, environ=environ, max_bytes=max_bytes)


@contextmanager
def _source_lock(work_root: Path, name: str) -> Iterator[None]:
    work_root.mkdir(parents=True, exist_ok=True)
    with open(work_root / f"{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise SourceBusy(f"source '{name}' is already being synced") from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _safe_path(files: Path, rel: str) -> Path:
    target = (files / rel).resolve()
    if not target.is_relative_to(files.resolve()):
        raise FetchError("path outside the source")
    return target


def _entry(ref: DocumentRef) -> dict[str, Any]:
    return {"version": ref.version, **({"location": ref.location} if ref.location else {}),
            **({"restricted": True} if ref.restricted else {})}


def _unreadable(fetched: list[tuple[DocumentRef, Path, Path]], staging: Path, max_bytes: int) -> list[str]:
    """The fetched documents that came back empty or unreadable (not those merely unsupported or too large)."""
    bad = []
    for ref, staged, _ in fetched:
        try:
            load_document(staged, staging, max_bytes=max_bytes)
        except DocumentSkipped as exc:
            if not str(exc).startswith(("unsupported file type", "too large")):
                bad.append(ref.path)
    return bad


def update_mirror(connector: Connector, work_dir: Path, *, name: str = "", guard: ChangeGuard | None = None,
                  max_bytes: int = 5_000_000) -> tuple[list[str], list[SkippedFile]]:
    """Apply the connector's changes since the last cursor to ``work_dir/files``; returns (errors, skipped).
    The cursor advances only when every changed document was fetched, so failures are retried. Raises
    :class:`ChangeHeld`, before anything is applied, when ``guard`` holds the change: fetched documents are
    staged in ``work_dir/staging`` and checked first (a surge of empty or unreadable documents is held too)."""
    state_path = work_dir / "state.json"
    files = work_dir / "files"
    files.mkdir(parents=True, exist_ok=True)
    state = _State.load(state_path)
    changes = connector.changes(state.cursor)
    errors: list[str] = list(changes.errors)
    skipped = [SkippedFile(path, reason) for path, reason in sorted(changes.skipped.items())]
    gone = set(changes.deleted) | set(changes.skipped)
    if changes.complete:
        listed = {r.path for r in changes.changed}
        gone |= {p for p in state.docs if p not in listed}
        gone |= {p.relative_to(files).as_posix() for p in files.rglob("*")
                 if p.is_file() and not p.name.startswith(".") and p.relative_to(files).as_posix() not in listed}
    if guard is not None:
        modified = sum(1 for r in changes.changed
                       if r.path in state.docs and state.docs[r.path].get("version") != r.version)
        guard.check(name, len(state.docs), len(gone & set(state.docs)), modified)
    staging = work_dir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    fetched: list[tuple[DocumentRef, Path, Path]] = []
    for ref in changes.changed:
        known = state.docs.get(ref.path)
        try:
            target = _safe_path(files, ref.path)
            if known and known.get("version") == ref.version and target.is_file():
                state.docs[ref.path] = _entry(ref)  # same content; its permissions or link may have changed
                continue
            content = connector.fetch(ref)
        except FetchError as exc:
            errors.append(f"{ref.path}: {exc}")
            continue
        staged = staging / target.relative_to(files.resolve())
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(content)
        fetched.append((ref, staged, target))
    if guard is not None:
        guard.check_readable(name, len(state.docs), _unreadable(fetched, staging, max_bytes))
    for ref, staged, target in fetched:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        state.docs[ref.path] = _entry(ref)
    shutil.rmtree(staging, ignore_errors=True)
    for rel in sorted(gone):
        state.docs.pop(rel, None)
        try:
            target = _safe_path(files, rel)
        except FetchError:
            continue
        target.unlink(missing_ok=True)
        parent = target.parent
        while parent != files.resolve() and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    if not errors:
        state.cursor = changes.cursor
    state.save(state_path)
    return errors, skipped


def read_documents(source: SourceConfig, work_dir: Path, *, max_bytes: int,
                   doc_base_url: str | None = None) -> tuple[list[SourceDocument], list[SkippedFile]]:
    """The documents of one source as the index holds them: ids prefixed with the source's name, its knowledge
    set and visibility applied (a document restricted by its own front matter, or by the source's permissions as
    its connector reported them, stays restricted), located in their own system when the connector said where."""
    restricted: set[str] = set()
    if isinstance(source, FolderSource):
        root, base_url = source.path, source.base_url or doc_base_url
        locations: dict[str, str] = {}
    else:
        root, base_url = work_dir / "files", None
        docs = _State.load(work_dir / "state.json").docs
        locations = {p: d["location"] for p, d in docs.items() if "location" in d}
        restricted = {p for p, d in docs.items() if d.get("restricted")}
    if not root.is_dir():
        return [], []
    documents, skipped = scan(root, max_bytes=max_bytes, base_url=base_url)
    out = []
    for doc in documents:
        rel = doc.path.relative_to(root).as_posix()
        location = doc.location if is_url(doc.location) else locations.get(rel, doc.location)
        out.append(replace(doc, doc_id=f"{source.name}/{doc.doc_id}", location=location,
                           knowledge_set=source.knowledge_set or doc.knowledge_set,
                           public=doc.public and source.visibility == "public" and rel not in restricted,
                           meta={**doc.meta, "source": source.name}))
    return out, [SkippedFile(f"{source.name}/{s.path}", s.reason) for s in skipped]


def _check_in_place(store: IndexStore, kb: str, name: str, documents: list[SourceDocument],
                    guard: ChangeGuard) -> None:
    latest = store.manifest(kb).latest
    prefix = f"{name}/"
    old = {doc_id: entry["hash"] for doc_id, entry in (latest["docs"] if latest else {}).items()
           if doc_id.startswith(prefix)}
    new = {d.doc_id: d.content_hash for d in documents if d.doc_id.startswith(prefix)}
    guard.check(name, len(old), len(set(old) - set(new)), sum(1 for i, h in new.items() if i in old and old[i] != h))


def sync_source(
    store: IndexStore,
    source: SourceConfig,
    sources: list[SourceConfig],
    *,
    work_root: Path,
    default_kb: str,
    environ: Mapping[str, str] | None = None,
    protected_versions: set[int] | None = None,
    progress: ProgressCallback | None = None,
    guard: ChangeGuard | None = None,
    embedding: EmbeddingWork = embed_here,
) -> SyncResult:
    """Sync ``source`` and rebuild its knowledge base from all of its sources' mirrors. Never raises for a
    problem of the source itself: the result says ``failed`` (or ``held``, by ``guard``) and why. ``embedding``
    embeds the new chunks (here, or shared with the workers: :mod:`knowledge.shared_embedding`)."""
    kb = kb_of(source, default_kb)
    result = SyncResult(source=source.name, kind=source.kind, kb=kb, started_at=datetime.now(timezone.utc))
    started = time.perf_counter()
    config = store.config
    try:
        with _source_lock(work_root, source.name):
            work_dir = work_root / source.name
            connector = connector_for(source, work_dir, environ=environ, max_bytes=config.max_document_bytes)
            if connector.local_root is None:
                try:
                    errors, listed_skips = update_mirror(connector, work_dir, name=source.name, guard=guard,
                                                         max_bytes=config.max_document_bytes)
                finally:
                    close = getattr(connector, "close", None)
                    if callable(close):
                        close()
                result.errors.extend(errors)
                result.skipped.extend(SkippedFile(f"{source.name}/{s.path}", s.reason) for s in listed_skips)
            elif not connector.local_root.is_dir():
                raise SourceError(f"folder not found: {connector.local_root}")
            documents: list[SourceDocument] = []
            for other in sources:
                if kb_of(other, default_kb) != kb:
                    continue
                docs, skipped = read_documents(other, work_root / other.name, max_bytes=config.max_document_bytes,
                                               doc_base_url=config.doc_base_url)
                documents.extend(docs)
                if other.name == source.name:
                    result.skipped.extend(skipped)
            if guard is not None and connector.local_root is not None:  # read in place: compared with the index
                _check_in_place(store, kb, source.name, documents, guard)
            if not any(d.doc_id.startswith(f"{source.name}/") for d in documents) and not result.errors:
                log.warning("source.sync.empty", source=source.name)
            report = ingest_documents(store, documents, [], kb=kb, source=f"source:{source.name}",
                                      progress=progress, protected_versions=protected_versions,
                                      embedding=embedding)
    except ChangeHeld as exc:
        result.status = "held"
        result.errors.append(str(exc))
        result.seconds = time.perf_counter() - started
        log.warning("source.sync.held", source=source.name, kind=source.kind, error=str(exc))
        return result
    except (SourceError, SourcesConfigError, NoDocuments) as exc:
        result.status = "failed"
        result.errors.append(str(exc))
        result.seconds = time.perf_counter() - started
        log.warning("source.sync.failed", source=source.name, kind=source.kind, error=str(exc))
        return result
    mine = f"{source.name}/"
    result.added = [d for d in report.ingested if d.startswith(mine)]
    result.updated = [d for d in report.updated if d.startswith(mine)]
    result.unchanged = [d for d in report.unchanged if d.startswith(mine)]
    result.deleted = [d for d in report.deleted if d.startswith(mine)]
    result.index_version = report.version
    result.created_version = report.created_version
    result.status = "partial" if result.errors else ("ok" if report.created_version else "unchanged")
    result.seconds = time.perf_counter() - started
    log.info("source.sync.done", source=source.name, kind=source.kind, kb=kb, status=result.status,
             added=len(result.added), updated=len(result.updated), unchanged=len(result.unchanged),
             deleted=len(result.deleted), skipped=len(result.skipped), errors=len(result.errors),
             version=result.index_version, seconds=round(result.seconds, 2))
    return result
