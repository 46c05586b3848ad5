"""The knowledge layer's own configuration: what ingestion, the index and the embedder need, and nothing else.

Like arq's ``RedisSettings``, the library owns its config type and the application maps its settings onto it
(:meth:`KnowledgeConfig.from_settings`), so the classes of this package never see the app's whole ``Settings``.
The defaults are the application's defaults (a test checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.core.settings import Settings

#: The default (English) MiniLM; two opt-in cross-lingual models (docs/retrieval.md); a local
#: sentence-transformers model.
EmbeddingBackend = Literal["onnx-minilm-int8", "use-multilingual-v3", "multilingual-e5-small-q4", "sentence-transformers"]


#: Backends that map questions in other languages near the documents by themselves (no second embedder needed).
MULTILINGUAL_BACKENDS: frozenset[str] = frozenset({"use-multilingual-v3", "multilingual-e5-small-q4"})


@dataclass(frozen=True)
class EmbeddingConfig:
    """Which embedder to build and how it runs. Hashable: the process's embedders are cached by it."""

    backend: EmbeddingBackend = "onnx-minilm-int8"
    #: Only the sentence-transformers backend selects a model by name (it must be available offline).
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    #: Token limit per text, special tokens included (MiniLM and sentence-transformers; the cross-lingual
    #: backends read whole texts).
    max_tokens: int = 256
    #: ONNX intra-op threads (torch threads for sentence-transformers); 0 = one per core.
    threads: int = 0
    #: Texts per model call.
    batch_size: int = 8


@dataclass(frozen=True)
class KnowledgeConfig:
    """Where the index lives, how documents are read and chunked, and how they are embedded."""

    #: BM25 files and manifests, per knowledge base and version.
    index_dir: Path
    #: The embedded Chroma database (unused when ``chroma_url`` is set).
    chroma_dir: Path
    #: http(s)://host:port of a Chroma server; None = the embedded one under ``chroma_dir``.
    chroma_url: str | None = None
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    #: A second, cross-lingual embedder: each chunk is also embedded with it, and a question that is not in
    #: ``documents_language`` is searched with those vectors. None = one embedder.
    crosslingual: EmbeddingConfig | None = field(
        default_factory=lambda: EmbeddingConfig(backend="use-multilingual-v3"))
    #: The documents' language (ISO 639-1).
    documents_language: str = "en"
    #: Target words per chunk, and the size up to which a short last paragraph is repeated in the next chunk.
    chunk_words: int = 180
    chunk_overlap_words: int = 30
    #: Larger files are skipped at ingestion, with a reason.
    max_document_bytes: int = 5_000_000
    #: Base URL that makes a document's path citable; None = the file's absolute path.
    doc_base_url: str | None = None
    #: Index versions kept (the newest included) so that a rollback is a pointer change.
    index_keep_versions: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeConfig:
        """The application's ``DESKMATE_*`` settings, as the knowledge layer sees them."""
        return cls(
            index_dir=settings.index_dir(),
            chroma_dir=settings.chroma_path(),
            chroma_url=settings.chroma_url,
            embedding=EmbeddingConfig(
                backend=settings.embedding_backend,
                model=settings.embedding_model,
                max_tokens=settings.embedding_max_tokens,
                threads=settings.embedding_threads,
                batch_size=settings.embedding_batch_size,
            ),
            crosslingual=(None if settings.embedding_crosslingual == "off"
                          or settings.embedding_backend in MULTILINGUAL_BACKENDS
                          else EmbeddingConfig(backend=settings.embedding_crosslingual,
                                               max_tokens=settings.embedding_max_tokens,
                                               threads=settings.embedding_threads)),
            documents_language=settings.documents_language,
            chunk_words=settings.chunk_words,
            chunk_overlap_words=settings.chunk_overlap_words,
            max_document_bytes=settings.max_document_bytes,
            doc_base_url=settings.doc_base_url,
            index_keep_versions=settings.index_keep_versions,
        )
