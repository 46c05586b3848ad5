"""A new index version in which only the learned answers (``learned/`` documents) changed.

:func:`refresh_learned` re-reads ``<data_dir>/learned/<kb>/`` (:mod:`knowledge.learned`) and carries every other
document's chunks and vectors over from the latest version as they are: no source is re-read, only new and
edited answers are embedded, and an answer that was withdrawn (rejected after approval, expired) leaves the index.
The worker runs it after each review decision (:mod:`playbooks.learned`); the next full build (``deskmate ingest``,
a source sync) reads the same folder, so the two never disagree.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from bot.core.log import get_logger
from knowledge.calibration import calibrate
from knowledge.index import ChunkRecord, DocEntry, IndexStore, Manifest, now_iso
from knowledge.ingest import _chunking_params, document_records, embed_records
from knowledge.learned import is_learned, learned_documents

log = get_logger(__name__)


def refresh_learned(store: IndexStore, kb: str, *, protected_versions: set[int] | None = None,
                    now: datetime | None = None) -> dict[str, Any]:
    """Make a new version of ``kb`` whose ``learned/`` documents are the folder's current ones, everything else
    carried over from the latest version. Returns what changed (``created_version`` False: nothing did, or there
    is no index yet — the first build reads the folder anyway)."""
    started = time.perf_counter()
    config = store.config
    outcome: dict[str, Any] = {"kb": kb, "version": None, "created_version": False, "added": [], "updated": [],
                               "deleted": [], "unchanged": [], "chunks_embedded": 0, "seconds": 0.0}
    with store.writer_lock(kb):
        manifest = store.manifest(kb)
        previous = manifest.latest
        if previous is None:
            return outcome
        outcome["version"] = int(previous["version"])
        if manifest.chunking != _chunking_params(store):
            log.info("learned.refresh_needs_ingest", kb=kb, reason="the chunking or embedders changed")
            return outcome
        documents, _skipped = learned_documents(config, kb, now=now)
        old_docs = previous["docs"]
        old_learned = {doc_id: entry for doc_id, entry in old_docs.items() if is_learned(doc_id)}
        to_embed: set[str] = set()
        for doc in documents:
            old = old_learned.get(doc.doc_id)
            if old is None:
                outcome["added"].append(doc.doc_id)
                to_embed.add(doc.doc_id)
            elif old["hash"] != doc.content_hash:
                outcome["updated"].append(doc.doc_id)
                to_embed.add(doc.doc_id)
            else:
                outcome["unchanged"].append(doc.doc_id)
        outcome["deleted"] = sorted(set(old_learned) - {d.doc_id for d in documents})
        if not to_embed and not outcome["deleted"]:
            outcome["seconds"] = time.perf_counter() - started
            return outcome

        data = store.load(kb, int(previous["version"]))
        records: list[ChunkRecord] = [c for c in data.chunks if not is_learned(c.doc_id)]
        doc_entries: dict[str, DocEntry] = {d: e for d, e in old_docs.items() if not is_learned(d)}
        new_records: list[ChunkRecord] = []
        for doc in documents:
            doc_records, doc_entries[doc.doc_id] = document_records(store, doc)
            records.extend(doc_records)
            if doc.doc_id in to_embed:
                new_records.extend(doc_records)
        embeddings = embed_records(store.embedder, new_records)
        crosslingual = store.crosslingual_embedder
        crosslingual_embeddings = (embed_records(crosslingual, new_records, stage="embed-crosslingual")
                                   if crosslingual is not None else None)
        version = int(previous["version"]) + 1
        store.write_version(kb, version, records, embeddings, copy_from=int(previous["version"]),
                            crosslingual_embeddings=crosslingual_embeddings)
        store.write_vector_info(kb, version, {
            "embedder": store.embedder.name, "crosslingual": crosslingual.name if crosslingual else None,
            "null_scores": calibrate(store, kb, version, crosslingual=crosslingual is not None),
        })
        manifest = Manifest(kb=kb, embedder=store.embedder.name, chunking=manifest.chunking,
                            versions=manifest.versions)
        manifest.versions.append({
            "version": version, "created_at": now_iso(), "source": previous["source"],
            "doc_count": len(doc_entries), "chunk_count": len(records), "docs": doc_entries,
        })
        store.write_manifest(manifest)
        store.prune(kb, config.index_keep_versions, protected_versions)
        outcome.update(version=version, created_version=True, chunks_embedded=len(embeddings),
                       seconds=time.perf_counter() - started)
        log.info("learned.refreshed", kb=kb, version=version, added=len(outcome["added"]),
                 updated=len(outcome["updated"]), deleted=len(outcome["deleted"]),
                 embedded=len(embeddings), seconds=round(outcome["seconds"], 2))
        return outcome
