"""The versioned index: one Chroma collection and one BM25 folder per (knowledge base, version).

Layout under ``KnowledgeConfig.index_dir``::

    <kb>/manifest.json        versions, and per version the documents (hash, title, location, set, chunks)
    <kb>/v<N>/chunks.json     chunk ids, texts and metadata in BM25 row order
    <kb>/v<N>/bm25/           the bm25s index (loaded memory-mapped)
    <kb>/v<N>/vectors.json    which embedders made the version's vectors, and the "not found" calibration
    <kb>/v<N>/vectors.npy     the same vectors as Chroma's, one row per chunk in chunks.json's order (and
    <kb>/v<N>/vectors_xl.npy  the cross-lingual ones): loaded memory-mapped, so that the dense search of a
                              question is one matrix-vector product (exact cosines, no vector-store round trip)
    <kb>/v<N>/headings.json   per chunk, the BM25 terms of its title and heading path (the heading-match
                              signal of retrieval), so that no question re-tokenizes a chunk

Chroma holds the vectors in collection ``dm_<kb>_v<N>`` (embedded ``PersistentClient`` in
``KnowledgeConfig.chroma_dir``, or a server at ``chroma_url``) and, when a cross-lingual embedder is configured
(``KnowledgeConfig.crosslingual``), the same chunks' cross-lingual vectors in ``dm_<kb>_v<N>_xl``. A new version
copies the vectors of unchanged documents from the previous one, so only new and changed documents are embedded;
older versions are kept (``index_keep_versions``) so that rolling back is a pointer change.

The calibration (:mod:`knowledge.calibration`) is, per search route, the sorted best cosines that the bundled
null questions reach in this version: what "as close as an unrelated question gets" means for this corpus,
embedder and language.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast
from urllib.parse import urlparse

import bm25s
import chromadb
import numpy as np
import numpy.typing as npt
import Stemmer
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Embeddable, EmbeddingFunction
from chromadb.config import Settings as ChromaSettings

from bot.core.files import exclusive_lock
from bot.core.log import get_logger
from knowledge.chunking import Chunk, indexed_text
from knowledge.config import KnowledgeConfig
from knowledge.embedding import DeskmateEmbeddingFunction, Embedder, EmbeddingModelError, Vector, get_embedder

log = get_logger(__name__)

_STEMMER: Any = None  # a Stemmer.Stemmer (PyStemmer has no type information)
#: Held while a Chroma client is created. Process-wide, not per store: Chroma shares one system per directory
#: across all the clients of a process, and two stores on the same directory would race on it too.
_CLIENT_LOCK = threading.Lock()


class Tokenized(Protocol):
    """What :func:`bm25_tokenize` returns (bm25s' named tuple): token ids per text, and their vocabulary."""

    @property
    def ids(self) -> list[list[int]]: ...

    @property
    def vocab(self) -> dict[str, int]: ...


def _stemmer() -> Any:
    global _STEMMER
    if _STEMMER is None:
        _STEMMER = Stemmer.Stemmer("english")
    return _STEMMER


def bm25_tokenize(texts: list[str]) -> Tokenized:
    tokens: Tokenized = bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=False)
    return tokens


def stem_words(words: list[str]) -> list[str]:
    """The stems of lower-cased ``words``, as the BM25 index stores its terms (its vocabulary's keys)."""
    return [str(s) for s in _stemmer().stemWords([w.lower() for w in words])]


def collection_name(kb: str, version: int, *, crosslingual: bool = False) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_-]", "-", kb)[:40]
    return f"dm_{safe}_v{version}" + ("_xl" if crosslingual else "")


@dataclass
class ChunkRecord:
    """A chunk as stored: what retrieval needs to build a citable passage without another lookup."""

    chunk_id: str
    doc_id: str
    title: str
    heading: str
    location: str
    knowledge_set: str
    public: bool
    text: str


@dataclass
class VersionData:
    """A loaded index version: BM25 retriever, chunk table and masks, ready for queries."""

    kb: str
    version: int
    chunks: list[ChunkRecord]
    bm25: bm25s.BM25
    row_of: dict[str, int]
    knowledge_sets: npt.NDArray[np.object_]  # of str, one per chunk
    public: npt.NDArray[np.bool_]
    #: The cross-lingual embedder's name when the version has its vectors (``dm_<kb>_v<N>_xl``), else None.
    crosslingual: str | None = None
    #: The main embedder's name (``vectors.json``; None in versions built before it was recorded).
    embedder: str | None = None
    #: Per search route ("native", "foreign"): the null questions' best cosines, ascending (vectors.json).
    null_scores: dict[str, list[float]] = field(default_factory=dict)
    #: The chunks' vectors in row order, memory-mapped (None in versions built before they were written).
    vectors: npt.NDArray[np.float32] | None = None
    crosslingual_vectors: npt.NDArray[np.float32] | None = None
    #: Per chunk (row), the BM25 terms of its title and heading path (``headings.json``; computed at load for
    #: versions built before it was written).
    heading_terms: list[frozenset[str]] = field(default_factory=list)
    term_chunks: dict[str, int] = field(default_factory=dict)  # chunks per BM25 term, filled lazily by retrieval
    #: Row masks of the search filters seen so far (knowledge sets, public only): computed once per version.
    masks: dict[tuple[tuple[str, ...] | None, bool], npt.NDArray[np.bool_]] = field(default_factory=dict)


class ChunkingParams(TypedDict, total=False):
    """What a version's chunks depend on besides the documents; empty in a manifest with no version yet."""

    target_words: int
    overlap_words: int
    embedder: str
    max_tokens: int
    crosslingual: str  # the cross-lingual embedder's name, "" for none


class DocEntry(TypedDict):
    """A document of an index version, as the manifest records it."""

    hash: str  # sha256 of the file's bytes
    title: str
    location: str
    knowledge_set: str
    public: bool
    format: str
    chunks: int


class VectorInfo(TypedDict, total=False):
    """``v<N>/vectors.json``: the embedders of a version's vectors and its "not found" calibration."""

    embedder: str
    crosslingual: str | None
    null_scores: dict[str, list[float]]  # per search route ("native", "foreign"), ascending


class VersionEntry(TypedDict):
    """One index version in the manifest."""

    version: int
    created_at: str
    source: str
    doc_count: int
    chunk_count: int
    docs: dict[str, DocEntry]


@dataclass
class Manifest:
    kb: str
    embedder: str = ""
    chunking: ChunkingParams = field(default_factory=lambda: ChunkingParams())
    versions: list[VersionEntry] = field(default_factory=list)

    @property
    def latest(self) -> VersionEntry | None:
        return self.versions[-1] if self.versions else None

    def get(self, version: int) -> VersionEntry | None:
        return next((v for v in self.versions if v["version"] == version), None)


class IndexNotFound(LookupError):
    pass


class IndexStore:
    """Reads and writes index versions. One per process; loaded versions are cached (read-only data)."""

    def __init__(self, config: KnowledgeConfig, embedder: Embedder | None = None,
                 crosslingual_embedder: Embedder | None = None) -> None:
        self.config = config
        self.root = config.index_dir
        self._embedder = embedder
        self._crosslingual = crosslingual_embedder
        self._client: ClientAPI | None = None
        self._loaded: dict[tuple[str, int], VersionData] = {}
        self._lock = threading.Lock()
        #: per knowledge base: the manifest file's identity (inode, size, mtime) and its version numbers — a
        #: question costs one ``stat``, not a read and parse of the manifest (which lists every document). An
        #: ingest in any process replaces the file (a new inode), so every process sees the new version at its
        #: next question.
        self._versions: dict[str, tuple[tuple[int, int, int], list[int]]] = {}

    # --- components ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.config.embedding)
        return self._embedder

    @property
    def crosslingual_embedder(self) -> Embedder | None:
        """The second embedder for questions in other languages (``KnowledgeConfig.crosslingual``), or None."""
        if self._crosslingual is None and self.config.crosslingual is not None:
            self._crosslingual = get_embedder(self.config.crosslingual, main=False)
        return self._crosslingual

    @property
    def client(self) -> ClientAPI:
        """The Chroma client, created on first use: once per store, under a process-wide lock.

        Chroma registers a persistent client's shared system (one per directory, per process) before that
        system has finished starting, so threads creating clients at once see it half-built — ``'RustBindingsAPI'
        object has no attribute 'bindings'``, ``KeyError(<path>)``, ``Could not connect to tenant
        default_tenant``. The worker calls :meth:`open` at startup, before it takes jobs.
        """
        client = self._client
        if client is not None:
            return client
        with _CLIENT_LOCK:
            if self._client is None:
                self._client = self._create_client()
            return self._client

    def open(self) -> ClientAPI:
        """Create the Chroma client now (the worker's warm-up), so no job is the first to."""
        return self.client

    def _create_client(self) -> ClientAPI:
        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if self.config.chroma_url:
            url = urlparse(self.config.chroma_url)
            return chromadb.HttpClient(
                host=url.hostname or "localhost",
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
        path = self.config.chroma_dir
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)

    @staticmethod
    def _embedding_function(embedder: Embedder) -> EmbeddingFunction[Embeddable]:
        # Chroma's parameters want a function of documents *and* images (EmbeddingFunction is contravariant in
        # its input); a text-only function is what Chroma's own text embedders are too.
        return cast("EmbeddingFunction[Embeddable]", DeskmateEmbeddingFunction(embedder))

    def collection(self, kb: str, version: int, *, create: bool = False, crosslingual: bool = False) -> Collection:
        """The version's vectors (``crosslingual``: its cross-lingual vectors; the store must have that
        embedder)."""
        name = collection_name(kb, version, crosslingual=crosslingual)
        embedder = self.crosslingual_embedder if crosslingual else self.embedder
        if embedder is None:
            raise EmbeddingModelError("no cross-lingual embedder is configured (DESKMATE_EMBEDDING_CROSSLINGUAL)")
        function = self._embedding_function(embedder)
        if create:
            return self.client.get_or_create_collection(
                name, embedding_function=function, metadata={"hnsw:space": "cosine"}
            )
        collection = self.client.get_collection(name, embedding_function=function)
        self._check_embedder(collection, kb, version, embedder)
        return collection

    def _check_embedder(self, collection: Collection, kb: str, version: int, embedder: Embedder) -> None:
        """Refuse to search a version embedded by another model: two 384-d spaces would mix without an error.

        The collection keeps the config of the function it was created with (``DeskmateEmbeddingFunction``).
        """
        stored = (collection.configuration_json or {}).get("embedding_function") or {}
        embedded_with = (stored.get("config") or {}).get("embedder_name") if isinstance(stored, dict) else None
        check_embedded_with(kb, version, embedded_with, embedder)

    # --- manifest -----------------------------------------------------------------------------------
    def kb_dir(self, kb: str) -> Path:
        return self.root / re.sub(r"[^a-zA-Z0-9_.-]", "-", kb)

    def manifest(self, kb: str) -> Manifest:
        path = self.kb_dir(kb) / "manifest.json"
        if not path.exists():
            return Manifest(kb=kb)
        data = json.loads(path.read_text())
        return Manifest(kb=kb, embedder=data.get("embedder", ""), chunking=data.get("chunking", {}),
                        versions=data.get("versions", []))

    def write_manifest(self, manifest: Manifest) -> None:
        path = self.kb_dir(manifest.kb) / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"kb": manifest.kb, "embedder": manifest.embedder, "chunking": manifest.chunking,
                                   "versions": manifest.versions}, indent=1))
        os.replace(tmp, path)

    @contextmanager
    def writer_lock(self, kb: str) -> Iterator[None]:
        """One ingest per knowledge base at a time, across processes."""
        with exclusive_lock(self.kb_dir(kb) / ".lock"):
            yield

    def latest_version(self, kb: str) -> int | None:
        versions = self.versions(kb)
        return versions[-1] if versions else None

    def versions(self, kb: str) -> list[int]:
        """The kept version numbers of ``kb``, oldest first: read from the manifest when it changed since the
        last call (one ``stat`` otherwise)."""
        path = self.kb_dir(kb) / "manifest.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            self._versions.pop(kb, None)
            return []
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._versions.get(kb)
        if cached is not None and cached[0] == key:
            return cached[1]
        versions = [int(v["version"]) for v in self.manifest(kb).versions]
        self._versions[kb] = (key, versions)
        return versions

    def resolve_version(self, kb: str, version: int | None) -> int:
        versions = self.versions(kb)
        if not versions:
            raise IndexNotFound(f"knowledge base '{kb}' has no index yet: run `deskmate ingest DIR --kb {kb}`")
        if version is None:
            return versions[-1]
        if version not in versions:
            kept = ", ".join(str(v) for v in versions)
            raise IndexNotFound(f"index version {version} of '{kb}' is not kept (kept: {kept})")
        return version

    # --- writing ------------------------------------------------------------------------------------
    def write_version(
        self,
        kb: str,
        version: int,
        records: list[ChunkRecord],
        new_embeddings: dict[str, Vector],
        copy_from: int | None,
        progress: Callable[[int], None] | None = None,
        crosslingual_embeddings: dict[str, Vector] | None = None,
    ) -> None:
        """Create collection(s) and BM25 files for ``version``. Vectors of chunks not in ``new_embeddings`` (and
        ``crosslingual_embeddings``, when given) are copied from version ``copy_from``."""
        matrix = self._write_vectors(kb, version, records, new_embeddings, copy_from, progress)
        crosslingual_matrix = None
        if crosslingual_embeddings is not None:
            crosslingual_matrix = self._write_vectors(kb, version, records, crosslingual_embeddings, copy_from, None,
                                                      crosslingual=True)
        vdir = self.kb_dir(kb) / f"v{version}"
        if vdir.exists():
            shutil.rmtree(vdir)
        vdir.mkdir(parents=True)
        np.save(vdir / "vectors.npy", matrix)
        if crosslingual_matrix is not None:
            np.save(vdir / "vectors_xl.npy", crosslingual_matrix)
        retriever = bm25s.BM25()
        corpus = [indexed_text(r.title, r.heading, r.text) for r in records]
        retriever.index(bm25_tokenize(corpus), show_progress=False)
        retriever.save(str(vdir / "bm25"))
        (vdir / "chunks.json").write_text(json.dumps([r.__dict__ for r in records]))
        (vdir / "headings.json").write_text(json.dumps([sorted(t) for t in heading_terms(records)]))

    def write_vector_info(self, kb: str, version: int, info: VectorInfo) -> None:
        """Record which embedders made the version's vectors, and its calibration (``vectors.json``)."""
        path = self.kb_dir(kb) / f"v{version}" / "vectors.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    def _write_vectors(self, kb: str, version: int, records: list[ChunkRecord], new_embeddings: dict[str, Vector],
                       copy_from: int | None, progress: Callable[[int], None] | None, *,
                       crosslingual: bool = False) -> npt.NDArray[np.float32]:
        """Add the version's vectors to its collection; return them as one matrix in ``records``' order."""
        collection = self.collection(kb, version, create=True, crosslingual=crosslingual)
        batch = 1000
        copied_ids = [r.chunk_id for r in records if r.chunk_id not in new_embeddings]
        vectors: dict[str, npt.ArrayLike] = dict(new_embeddings)
        if copied_ids:
            if copy_from is None:
                raise ValueError("chunks without embeddings and no version to copy them from")
            previous = self.collection(kb, copy_from, crosslingual=crosslingual)
            for i in range(0, len(copied_ids), batch):
                got = previous.get(ids=copied_ids[i : i + batch], include=["embeddings"])
                embeddings = got["embeddings"]
                if embeddings is None:  # asked for with include=["embeddings"]
                    raise RuntimeError(f"the vector store returned no embeddings for version {copy_from}")
                for cid, emb in zip(got["ids"], embeddings):
                    vectors[cid] = emb
            missing = [cid for cid in copied_ids if cid not in vectors]
            if missing:
                raise RuntimeError(f"{len(missing)} chunks missing from version {copy_from}, e.g. {missing[0]}")
        for i in range(0, len(records), batch):
            part = records[i : i + batch]
            collection.add(
                ids=[r.chunk_id for r in part],
                embeddings=np.asarray([vectors[r.chunk_id] for r in part], dtype=np.float32),
                documents=[indexed_text(r.title, r.heading, r.text) for r in part],
                metadatas=[
                    {"doc_id": r.doc_id, "title": r.title, "heading": r.heading, "location": r.location,
                     "knowledge_set": r.knowledge_set, "public": r.public}
                    for r in part
                ],
            )
            if progress:
                progress(len(part))
        return np.asarray([vectors[r.chunk_id] for r in records], dtype=np.float32).reshape(len(records), -1)

    def prune(self, kb: str, keep: int, protected: set[int] | None = None) -> list[int]:
        """Drop all but the newest ``keep`` versions, never one in ``protected`` (pinned by a release)."""
        manifest = self.manifest(kb)
        candidates = manifest.versions[: max(0, len(manifest.versions) - max(1, keep))]
        drop = [v for v in candidates if int(v["version"]) not in (protected or set())]
        for entry in drop:
            version = int(entry["version"])
            for crosslingual in (False, True):
                try:
                    self.client.delete_collection(collection_name(kb, version, crosslingual=crosslingual))
                except Exception as exc:  # noqa: BLE001 - already gone (or never made: no cross-lingual) is fine
                    if not crosslingual:
                        log.warning("index.prune.collection_missing", kb=kb, version=version, error=str(exc))
            shutil.rmtree(self.kb_dir(kb) / f"v{version}", ignore_errors=True)
            self._loaded.pop((kb, version), None)
        dropped = {int(e["version"]) for e in drop}
        manifest.versions = [v for v in manifest.versions if int(v["version"]) not in dropped]
        self.write_manifest(manifest)
        return [int(e["version"]) for e in drop]

    # --- reading ------------------------------------------------------------------------------------
    def warm(self, kb: str) -> None:
        """Load the embedders, open the vector store and load ``kb``'s latest version now, before questions
        come: the first question is not the slow one, and a burst of first questions does not race to create
        the Chroma client (:attr:`client`). A vector store not reachable yet, or no index yet, is logged and left
        to the first question."""
        self.embedder.embed(["warm up"])
        crosslingual = self.crosslingual_embedder
        if crosslingual is not None:
            crosslingual.embed(["warm up"])
        try:
            self.open()
        except Exception as exc:  # noqa: BLE001 - a Chroma server still starting: the first search opens it
            log.warning("index.vector_store_unavailable", error=repr(exc)[:200])
        try:
            self.load(kb)
        except LookupError as exc:
            log.warning("index.none_yet", kb=kb, error=str(exc))

    def load(self, kb: str, version: int | None = None) -> VersionData:
        version = self.resolve_version(kb, version)
        key = (kb, version)
        data = self._loaded.get(key)
        if data is not None:
            return data
        with self._lock:
            data = self._loaded.get(key)
            if data is None:
                vdir = self.kb_dir(kb) / f"v{version}"
                chunks = [ChunkRecord(**c) for c in json.loads((vdir / "chunks.json").read_text())]
                bm25 = bm25s.BM25.load(str(vdir / "bm25"), mmap=True, show_progress=False)
                info_path = vdir / "vectors.json"  # absent in versions built before the cross-lingual vectors
                info: VectorInfo = json.loads(info_path.read_text()) if info_path.exists() else {}
                headings_path = vdir / "headings.json"  # absent in versions built before it was written
                headings = ([frozenset(t) for t in json.loads(headings_path.read_text())]
                            if headings_path.exists() else [])
                if len(headings) != len(chunks):
                    headings = heading_terms(chunks)
                data = VersionData(
                    kb=kb,
                    version=version,
                    chunks=chunks,
                    bm25=bm25,
                    row_of={c.chunk_id: i for i, c in enumerate(chunks)},
                    knowledge_sets=np.asarray([c.knowledge_set for c in chunks], dtype=object),
                    public=np.asarray([c.public for c in chunks], dtype=bool),
                    crosslingual=info.get("crosslingual") or None,
                    embedder=info.get("embedder") or None,
                    null_scores=dict(info.get("null_scores") or {}),
                    vectors=_load_matrix(vdir / "vectors.npy", len(chunks)),
                    crosslingual_vectors=_load_matrix(vdir / "vectors_xl.npy", len(chunks)),
                    heading_terms=headings,
                )
                self._loaded[key] = data
        return data

    def ping(self) -> None:
        """Raise if the vector store cannot be reached (for /readyz)."""
        self.client.heartbeat()


def check_embedded_with(kb: str, version: int, embedded_with: str | None, embedder: Embedder) -> None:
    """Refuse to search a version embedded by another model than ``embedder`` (None: not recorded)."""
    if embedded_with and embedded_with != embedder.name:
        raise EmbeddingModelError(
            f"Index '{kb}' version {version} was embedded with {embedded_with}, but this process embeds with "
            f"{embedder.name}: re-ingest (deskmate ingest) to build a version with the configured "
            f"backend, or set DESKMATE_EMBEDDING_BACKEND (or DESKMATE_EMBEDDING_CROSSLINGUAL) back."
        )


def heading_terms(chunks: list[ChunkRecord]) -> list[frozenset[str]]:
    """Per chunk, the BM25 terms (stems, stop words removed) of its title and heading path: one tokenizer call
    for all of them."""
    if not chunks:
        return []
    tokens = bm25_tokenize([f"{c.title} {c.heading}" for c in chunks])
    inverse = {i: t for t, i in tokens.vocab.items()}
    return [frozenset(inverse[i] for i in ids) for ids in tokens.ids]


def _load_matrix(path: Path, rows: int) -> npt.NDArray[np.float32] | None:
    """A version's vector matrix, memory-mapped; None when the version has none (or it does not match)."""
    if not path.exists():
        return None
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape[0] != rows or matrix.dtype != np.float32:
        log.warning("index.vectors_ignored", path=path.name, shape=str(matrix.shape), rows=rows)
        return None
    return cast("npt.NDArray[np.float32]", matrix)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def records_for(chunks: list[Chunk], *, title: str, location: str, knowledge_set: str, public: bool) -> list[ChunkRecord]:
    return [
        ChunkRecord(chunk_id=c.chunk_id, doc_id=c.doc_id, title=title, heading=c.heading, location=location,
                    knowledge_set=knowledge_set, public=public, text=c.text)
        for c in chunks
    ]
