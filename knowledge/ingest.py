"""Incremental ingestion: a folder in, a new index version out (or nothing, when nothing changed).

Unchanged documents (same content hash, same chunking and embedders) keep their vectors; new and changed
documents are chunked and embedded (with the main embedder, and with the cross-lingual one when configured);
documents gone from the folder are left out of the new version, which is then calibrated for "not found"
(:mod:`knowledge.calibration`). The run reports what it did in an :class:`IngestReport`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.core.log import get_logger
from knowledge.calibration import calibrate
from knowledge.chunking import chunk_document, indexed_text
from knowledge.embedding import Embedder, Vector
from knowledge.index import ChunkingParams, ChunkRecord, DocEntry, IndexStore, Manifest, now_iso, records_for
from knowledge.learned import is_learned, with_learned
from knowledge.shared_embedding import EmbeddingWork, ProgressCallback, embed_here
from knowledge.sources import SkippedFile, SourceDocument, scan

log = get_logger(__name__)


class NoDocuments(ValueError):
    """Nothing to index: the source has no usable document. No version is made, so the version in service (if
    any) keeps answering — an empty index would silently turn every question into "not found"."""

    def __init__(self, source: str, skipped: list[SkippedFile], *, had_documents: bool) -> None:
        what = "every document it had is gone" if had_documents else "it has no documents"
        why = f"; {len(skipped)} file(s) skipped, e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        keep = " The current index version is kept." if had_documents else ""
        super().__init__(f"nothing to index from {source}: {what}{why}.{keep}")
        self.source = source
        self.skipped = skipped
        self.had_documents = had_documents


@dataclass
class IngestReport:
    kb: str
    version: int | None
    created_version: bool
    ingested: list[str] = field(default_factory=list)  # new documents
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    chunks_total: int = 0
    chunks_embedded: int = 0
    pruned_versions: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [asdict(s) for s in self.skipped]
        return data


def _chunking_params(store: IndexStore) -> ChunkingParams:
    c = store.config
    crosslingual = store.crosslingual_embedder
    return {"target_words": c.chunk_words, "overlap_words": c.chunk_overlap_words, "embedder": store.embedder.name,
            "max_tokens": c.embedding.max_tokens, "crosslingual": crosslingual.name if crosslingual else ""}


def ingest(
    store: IndexStore,
    source_dir: Path,
    *,
    kb: str,
    progress: ProgressCallback | None = None,
    protected_versions: set[int] | None = None,
) -> IngestReport:
    """Build a new version of ``kb`` from ``source_dir`` when anything changed; raises :class:`NoDocuments`
    when the folder has no usable document."""
    config = store.config
    documents, skipped = scan(source_dir, max_bytes=config.max_document_bytes, base_url=config.doc_base_url)
    return ingest_documents(store, documents, skipped, kb=kb, source=str(source_dir.resolve()), progress=progress,
                            protected_versions=protected_versions)


def _access_changed(old: DocEntry, doc: SourceDocument) -> bool:
    """Who may see the document, its knowledge set or its link changed while its text did not (a page restricted
    or shared anew, a source's visibility changed): the next version must carry the new labels — keeping the old
    ones would show a newly restricted document in public channels."""
    return (bool(old.get("public", True)) != doc.public or old.get("knowledge_set") != doc.knowledge_set
            or old.get("location") != doc.location)


def ingest_documents(
    store: IndexStore,
    documents: list[SourceDocument],
    skipped: list[SkippedFile],
    *,
    kb: str,
    source: str,
    progress: ProgressCallback | None = None,
    protected_versions: set[int] | None = None,
    embedding: EmbeddingWork = embed_here,
) -> IngestReport:
    """Build a new version of ``kb`` holding exactly ``documents`` (read by a connector or :func:`scan`), when
    anything changed. ``source`` is recorded in the version's manifest entry. ``embedding`` turns the new
    chunks' texts into vectors: here by default, or shared with the workers
    (:class:`knowledge.shared_embedding.SharedEmbedding`)."""
    started = time.perf_counter()
    config = store.config
    for s in skipped:
        log.warning("ingest.skipped", path=s.path, reason=s.reason)

    with store.writer_lock(kb):
        manifest = store.manifest(kb)
        if not any(not is_learned(d.doc_id) for d in documents):
            raise NoDocuments(source, skipped, had_documents=manifest.latest is not None)
        # every build also holds the knowledge base's approved learned answers (knowledge/learned.py)
        documents, skipped = with_learned(config, kb, documents, skipped)
        params = _chunking_params(store)
        previous = manifest.latest
        reusable = previous is not None and manifest.chunking == params
        old_docs: dict[str, DocEntry] = previous["docs"] if previous else {}

        report = IngestReport(kb=kb, version=previous["version"] if previous else None, created_version=False,
                              skipped=skipped)
        to_embed: list[SourceDocument] = []
        relabelled: list[str] = []
        for doc in documents:
            old = old_docs.get(doc.doc_id)
            if old is None:
                report.ingested.append(doc.doc_id)
                to_embed.append(doc)
            elif old["hash"] != doc.content_hash or old.get("title") != doc.title or not reusable:
                report.updated.append(doc.doc_id)  # the title is part of every chunk's indexed text
                to_embed.append(doc)
            elif _access_changed(old, doc):
                report.updated.append(doc.doc_id)  # same text, new visibility / set / link: new version, same vectors
                relabelled.append(doc.doc_id)
            else:
                report.unchanged.append(doc.doc_id)
        current_ids = {d.doc_id for d in documents}
        report.deleted = sorted(set(old_docs) - current_ids)

        if previous is not None and not to_embed and not relabelled and not report.deleted:
            report.chunks_total = int(previous.get("chunk_count", 0))
            report.seconds = time.perf_counter() - started
            return report

        records: list[ChunkRecord] = []
        embed_ids: set[str] = set()
        doc_entries: dict[str, DocEntry] = {}
        embed_doc_ids = {d.doc_id for d in to_embed}
        for doc in documents:
            doc_records, doc_entries[doc.doc_id] = document_records(store, doc)
            records.extend(doc_records)
            if doc.doc_id in embed_doc_ids:
                embed_ids.update(r.chunk_id for r in doc_records)

        to_vectors = [r for r in records if r.chunk_id in embed_ids]
        embeddings = embed_records(store.embedder, to_vectors, progress, embedding=embedding)
        crosslingual = store.crosslingual_embedder
        crosslingual_embeddings = (embed_records(crosslingual, to_vectors, progress, stage="embed-crosslingual",
                                                 embedding=embedding) if crosslingual is not None else None)
        version = (int(previous["version"]) + 1) if previous else 1
        total = len(records)
        written = 0

        def on_written(n: int) -> None:
            nonlocal written
            written += n
            if progress:
                progress("index", written, total)

        store.write_version(kb, version, records, embeddings,
                            copy_from=int(previous["version"]) if previous else None, progress=on_written,
                            crosslingual_embeddings=crosslingual_embeddings)
        store.write_vector_info(kb, version, {
            "embedder": store.embedder.name, "crosslingual": crosslingual.name if crosslingual else None,
            "null_scores": calibrate(store, kb, version, crosslingual=crosslingual is not None),
        })
        manifest = Manifest(kb=kb, embedder=store.embedder.name, chunking=params, versions=manifest.versions)
        manifest.versions.append({
            "version": version, "created_at": now_iso(), "source": source,
            "doc_count": len(documents), "chunk_count": total, "docs": doc_entries,
        })
        store.write_manifest(manifest)
        report.pruned_versions = store.prune(kb, config.index_keep_versions, protected_versions)
        report.version = version
        report.created_version = True
        report.chunks_total = total
        report.chunks_embedded = len(embeddings)
        report.seconds = time.perf_counter() - started
        log.info("ingest.done", kb=kb, version=version, new=len(report.ingested), updated=len(report.updated),
                 unchanged=len(report.unchanged), deleted=len(report.deleted), skipped=len(skipped),
                 chunks=total, embedded=len(embeddings), seconds=round(report.seconds, 1))
        return report


def document_records(store: IndexStore, doc: SourceDocument) -> tuple[list[ChunkRecord], DocEntry]:
    """A document's chunks as the index stores them, and its entry in the version's manifest."""
    chunks = chunk_document(doc.doc_id, doc.title, doc.text, target_words=store.config.chunk_words,
                            overlap_words=store.config.chunk_overlap_words)
    records = records_for(chunks, title=doc.title, location=doc.location, knowledge_set=doc.knowledge_set,
                          public=doc.public)
    return records, {"hash": doc.content_hash, "title": doc.title, "location": doc.location,
                     "knowledge_set": doc.knowledge_set, "public": doc.public, "format": doc.format,
                     "chunks": len(records)}


def embed_records(embedder: Embedder, records: list[ChunkRecord], progress: ProgressCallback | None = None, *,
                  stage: str = "embed", embedding: EmbeddingWork = embed_here) -> dict[str, Vector]:
    """Each record's vector by its chunk id (its indexed text: title, heading and text) through ``embedding``."""
    if not records:
        return {}
    vectors = embedding(embedder, [indexed_text(r.title, r.heading, r.text) for r in records], stage=stage,
                        progress=progress)
    return {record.chunk_id: vector for record, vector in zip(records, vectors, strict=True)}
