"""KnowledgeConfig: the knowledge layer's own configuration, mapped from the app's settings."""

from __future__ import annotations

from pathlib import Path

from knowledge.config import EmbeddingConfig, KnowledgeConfig
from tests.conftest import settings_for


def test_defaults_agree_with_the_app_settings(tmp_path: Path) -> None:
    assert KnowledgeConfig.from_settings(settings_for(tmp_path)) == KnowledgeConfig(
        index_dir=tmp_path / "index", chroma_dir=tmp_path / "chroma"
    )


def test_from_settings_maps_every_field(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, chroma_url="http://chroma:8000", doc_base_url="https://docs.example.com",
        max_document_bytes=1000, chunk_words=120, chunk_overlap_words=10, index_keep_versions=5,
        embedding_backend="sentence-transformers", embedding_model="local/model", embedding_max_tokens=128,
        embedding_threads=2, embedding_batch_size=16, documents_language="de",
    )
    assert KnowledgeConfig.from_settings(settings) == KnowledgeConfig(
        index_dir=settings.index_dir(),
        chroma_dir=settings.chroma_path(),
        chroma_url="http://chroma:8000",
        embedding=EmbeddingConfig(backend="sentence-transformers", model="local/model", max_tokens=128, threads=2,
                                  batch_size=16),
        crosslingual=EmbeddingConfig(backend="use-multilingual-v3", max_tokens=128, threads=2),
        documents_language="de",
        chunk_words=120,
        chunk_overlap_words=10,
        max_document_bytes=1000,
        doc_base_url="https://docs.example.com",
        index_keep_versions=5,
    )


def test_one_embedder_when_the_main_one_is_multilingual_or_the_second_is_off(tmp_path: Path) -> None:
    assert KnowledgeConfig.from_settings(settings_for(tmp_path, embedding_crosslingual="off")).crosslingual is None
    multilingual = settings_for(tmp_path, embedding_backend="multilingual-e5-small-q4")
    assert KnowledgeConfig.from_settings(multilingual).crosslingual is None
