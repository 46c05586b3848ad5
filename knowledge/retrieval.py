"""Hybrid retrieval: dense (Chroma) and sparse (BM25) candidates, fused into one ranking of citable passages.

Both retrievers propose candidates; every candidate is then scored by *both* (the BM25 score of any chunk is
one array lookup, and the cosine of a BM25-only candidate is computed from its stored vector), so fusion
compares complete evidence instead of guessing a missing rank. Fusion methods:

- ``weighted`` (default): a convex combination of per-query min-max normalised scores (dense weight 0.7, of
  which 0.1 goes to the cross-lingual embedder's cosine when the version has its vectors: a second, differently
  trained model's opinion lifts recall@1 on every English set measured), plus a heading-match bonus: the share of the question's terms found in the chunk's title and heading path
  (weight 0.2). People often ask in the words of a page's heading; BM25 over whole chunks dilutes that signal
  and dense similarity misses exact terms. Measured on three question sets (docs/retrieval.md) this is the one
  configuration tried whose recall@5 and MRR@10 never fall below the better single retriever; plain
  reciprocal rank fusion fell below it on two of them.
- ``rrf``: reciprocal rank fusion, kept for comparison.
- ``dense`` / ``bm25``: one retriever alone.

**Questions in another language.** A question that is confidently not in the documents' language
(:func:`knowledge.language.written_in`) is searched with the version's cross-lingual vectors (``_xl``
collection, :mod:`knowledge.index`) instead of the main embedder's, when the version has them (``crosslingual``
in the fusion settings, default on). Its BM25 and heading weights are scaled by the share of its terms that
occur in the documents at all: a German question still finds "Concur" or "VPN" by their letters, but its other
words are noise to an English BM25.

**Two queries for one message.** In a thread, a message the offline rules call self-contained is also searched
with the conversation's words carried (``alternative``, :mod:`knowledge.query`); the two rankings are merged by
reciprocal rank (k = :data:`ALTERNATIVE_RRF_K`), so a change of topic keeps its own passages on top and a
follow-up the rules missed still finds its conversation's page. With weighted fusion (``alternative_merge``
``"confidence"``, the default) each ranking's reciprocal ranks are weighted by how clearly its best document
stands out: its fused score's lead over the best *other* document (:func:`lead`) plus
:data:`ALTERNATIVE_LEAD_FLOOR`. A query whose candidates all score alike (the message alone, when it only makes
sense with the thread) then yields to one that singles out a page, and neither is ever ignored. "Not found" is decided on the message's own
passages (those only the alternative found carry no ``relevance``).

Each passage carries its calibrated ``relevance`` (:mod:`knowledge.calibration`): how its cosine compares with
the best cosines that unrelated questions reach in this version on the same route. The "not found" decision is
made on it (:func:`relevant_enough`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from chromadb.api.types import Where
from chromadb.base_types import InclusionExclusionOperator, LiteralValue

from knowledge.calibration import relevance
from knowledge.embedding import Embedder, Vector, embed_queries
from knowledge.index import IndexStore, VersionData, bm25_tokenize, check_embedded_with
from knowledge.language import written_in
from knowledge.passage import Passage
from knowledge.sources import display_location

Mode = Literal["hybrid", "dense", "bm25"]
#: Reciprocal-rank constant for merging a message's two rankings (measured in docs/retrieval.md: 3, 10 and 60).
ALTERNATIVE_RRF_K = 10
#: Confidence merge of a message's two rankings: added to each ranking's lead (fused-score units, where a
#: candidate's fused score lies in [0, 1 + heading weight]) so that a flat ranking keeps a say. Chosen in
#: docs/retrieval.md ("A fusion that never loses"): 0.02-0.05 give the same rankings there, 0 lets a confident
#: carried query override real changes of topic, 0.07 and 0.1 bring back the losses of plain reciprocal rank.
ALTERNATIVE_LEAD_FLOOR = 0.05


@dataclass(frozen=True)
class FusionConfig:
    method: Literal["weighted", "rrf"] = "weighted"
    dense_weight: float = 0.7
    heading_weight: float = 0.2
    rrf_k: int = 60
    #: Search questions not in the documents' language with the cross-lingual vectors (when the version has them).
    crosslingual: bool = True
    #: Weighted fusion, questions in the documents' language: the part of ``dense_weight`` given to the
    #: cross-lingual embedder's cosine (0 = the main embedder's alone).
    crosslingual_weight: float = 0.1
    #: How a message's ranking and its ``alternative``'s are merged (weighted fusion): ``"confidence"`` weights
    #: each ranking's reciprocal ranks by its best document's lead; ``"rrf"``: plain reciprocal rank.
    alternative_merge: Literal["confidence", "rrf"] = "confidence"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "FusionConfig":
        """A release's fusion settings. Releases are immutable: one made before the cross-lingual vectors has no
        ``crosslingual`` key and keeps searching every question with the main embedder; one made before the
        confidence merge has no ``alternative_merge`` key and keeps the reciprocal-rank merge. None: the
        defaults."""
        if data is None:
            return cls()
        data = {"crosslingual": False, "alternative_merge": "rrf", **data}
        return cls(**{k: v for k, v in data.items() if k in FUSION_KEYS})


FUSION_KEYS = ("method", "dense_weight", "heading_weight", "rrf_k", "crosslingual", "crosslingual_weight",
               "alternative_merge")


@dataclass
class SearchFilter:
    """Which chunks a search may return: named knowledge sets (None = all) and/or public sources only."""

    knowledge_sets: list[str] | None = None
    public_only: bool = False

    def chroma_where(self) -> Where | None:
        clauses: list[Where] = []
        if self.knowledge_sets is not None:
            in_sets: dict[InclusionExclusionOperator, list[LiteralValue]] = {
                "$in": [*self.knowledge_sets] or ["\x00none"]
            }
            clauses.append({"knowledge_set": in_sets})
        if self.public_only:
            clauses.append({"public": True})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def mask(self, data: VersionData) -> npt.NDArray[np.bool_] | None:
        """The chunks (rows) this filter lets through, None = all; computed once per version and filter."""
        if self.knowledge_sets is None and not self.public_only:
            return None
        key = (tuple(sorted(self.knowledge_sets)) if self.knowledge_sets is not None else None, self.public_only)
        cached = data.masks.get(key)
        if cached is not None:
            return cached
        mask: npt.NDArray[np.bool_] | None = None
        if self.knowledge_sets is not None:
            mask = np.isin(data.knowledge_sets, np.asarray(list(self.knowledge_sets), dtype=object))
        if self.public_only:
            mask = data.public if mask is None else (mask & data.public)
        assert mask is not None
        data.masks[key] = mask
        return mask


@dataclass
class _Candidate:
    row: int
    dense: float | None = None
    second: float = 0.0  # the cross-lingual embedder's cosine, for a question in the documents' language
    relevance: float | None = None
    bm25: float = 0.0
    fused: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)


def terms(text: str) -> set[str]:
    """Stemmed content words (BM25's tokenizer: English stop words removed)."""
    tokens = bm25_tokenize([text])
    inverse = {i: t for t, i in tokens.vocab.items()}
    return {inverse[i] for i in tokens.ids[0]} if tokens.ids else set()


def heading_match(query_terms: set[str], data: VersionData, row: int) -> float:
    """Share of the question's terms that appear in the chunk's title and heading path (prepared per chunk at
    ingestion: :attr:`~knowledge.index.VersionData.heading_terms`)."""
    if not query_terms:
        return 0.0
    return len(query_terms & data.heading_terms[row]) / len(query_terms)


def _minmax(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return np.ones_like(values) if hi > 0 else np.zeros_like(values)
    return (values - lo) / (hi - lo)


#: Questions per block of the dense product. Every question's cosines come from a product of the version's matrix
#: with a block of this many question vectors (the unused ones zero), searched alone or in a batch: BLAS chooses its
#: kernel by the block's shape, so a question's cosines are the same bit for bit either way (a test checks it), and
#: a batch reads the matrix once per block instead of once per question.
DENSE_BLOCK = 8


def dense_products(matrix: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Every chunk's cosine to each question: ``(questions, chunks)``, from ``matrix`` ``(chunks, dim)`` and
    ``vectors`` ``(questions, dim)``, in blocks of :data:`DENSE_BLOCK` questions."""
    out = np.empty((len(vectors), len(matrix)), dtype=np.float32)
    block = np.zeros((DENSE_BLOCK, vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(vectors), DENSE_BLOCK):
        part = vectors[start:start + DENSE_BLOCK]
        block[:] = 0.0
        block[:len(part)] = part
        out[start:start + len(part)] = (matrix @ block.T).T[:len(part)]
    return out


@dataclass
class PreparedQueries:
    """What :meth:`Retriever.search_many` computes once for all the questions of a batch."""

    #: The main embedder's vector of each question (by its text, whitespace collapsed).
    vectors: dict[str, Vector] = field(default_factory=dict)
    #: Every chunk's cosine to a question, by (kb, version, text).
    cosines: dict[tuple[str, int, str], npt.NDArray[np.float32]] = field(default_factory=dict)


#: One search: the question and :meth:`Retriever.search`'s keyword options.
SearchRequest = tuple[str, dict[str, Any]]
#: One search's passages, or the error it raised.
SearchResult = list[Passage] | Exception


class Retriever:
    """Ranked passages for a question from one index version."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    def search(
        self,
        query: str,
        *,
        kb: str,
        version: int | None = None,
        k: int = 6,
        candidates: int = 40,
        search_filter: SearchFilter | None = None,
        mode: Mode = "hybrid",
        fusion: FusionConfig | None = None,
        alternative: str | None = None,
        prepared: PreparedQueries | None = None,
    ) -> list[Passage]:
        """The ``k`` best passages for ``query`` (and ``alternative``: a second query whose ranking is merged
        with the first's — see the module's docstring). ``prepared``: vectors and cosines computed beforehand
        for a batch (:meth:`search_many`)."""
        options: dict[str, Any] = dict(kb=kb, version=version, k=k, candidates=candidates,
                                       search_filter=search_filter, mode=mode, fusion=fusion, prepared=prepared)
        first = self._search(query, **options)
        alternative = " ".join((alternative or "").split())
        if not alternative or alternative == " ".join(query.split()):
            return first
        # Whether anything is relevant enough to answer stays the message's own call: a passage only the
        # thread's words found carries no calibrated relevance (an off-topic question asked in a thread about
        # the VPN is not made answerable by the VPN page).
        own = {p.chunk_id for p in first}
        fusion = fusion or FusionConfig()
        confident = mode == "hybrid" and fusion.method == "weighted" and fusion.alternative_merge == "confidence"
        return [p if p.chunk_id in own else p.model_copy(update={"relevance": None})
                for p in _merge([first, self._search(alternative, **options)], k, confident=confident)]

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """Several searches, each answered as :meth:`search` answers it (or with the error it raised), their
        questions embedded by the main embedder in one call (the same vectors as one by one, less CPU per
        question), and their cosines come from one pass over each version's matrix per :data:`DENSE_BLOCK`
        questions (the same cosines as one by one): on this project's machine, per question, 4.6 instead of
        6.4 ms of embedding and ~0.5 instead of ~3.5 ms of dense product in full batches. Questions another
        route embeds (in another language: the cross-lingual embedder) are left to it."""
        language = self.store.config.documents_language
        by_version: dict[tuple[str, int], list[str]] = {}
        loaded: dict[tuple[str, int], VersionData] = {}
        for query, options in requests:
            if options.get("mode", "hybrid") not in ("hybrid", "dense"):
                continue
            crosslingual = (options.get("fusion") or FusionConfig()).crosslingual
            try:
                data = self.store.load(options["kb"], options.get("version"))
            except Exception:  # noqa: BLE001 - the search reports it
                continue
            loaded[(data.kb, data.version)] = data
            for text in (query, options.get("alternative") or ""):
                text = " ".join(text.split())
                if text and not (crosslingual and not written_in(text, language)):
                    by_version.setdefault((data.kb, data.version), []).append(text)
        unique = list(dict.fromkeys(text for texts in by_version.values() for text in texts))
        prepared = PreparedQueries()
        if len(unique) > 1:
            try:
                prepared.vectors = dict(zip(unique, np.asarray(embed_queries(self.store.embedder, unique),
                                                               dtype=np.float32)))
                for (kb, version), texts in by_version.items():
                    data = loaded[(kb, version)]
                    if data.vectors is None:
                        continue
                    check_embedded_with(kb, version, data.embedder, self.store.embedder)
                    texts = list(dict.fromkeys(texts))
                    cosines = dense_products(data.vectors, np.stack([prepared.vectors[t] for t in texts]))
                    prepared.cosines.update({(kb, version, t): row for t, row in zip(texts, cosines)})
            except Exception:  # noqa: BLE001 - each search computes its own and reports its own error
                prepared = PreparedQueries()
        results: list[SearchResult] = []
        for query, options in requests:
            try:
                results.append(self.search(query, **{**options, "prepared": prepared}))
            except Exception as exc:  # noqa: BLE001 - one failed search is that asker's error, not the batch's
                results.append(exc)
        return results

    def _search(
        self,
        query: str,
        *,
        kb: str,
        version: int | None,
        k: int,
        candidates: int,
        search_filter: SearchFilter | None,
        mode: Mode,
        fusion: FusionConfig | None,
        prepared: PreparedQueries | None = None,
    ) -> list[Passage]:
        query = " ".join(query.split())
        if not query or k <= 0:
            return []
        fusion = fusion or FusionConfig()
        search_filter = search_filter or SearchFilter()
        data = self.store.load(kb, version)
        found: dict[int, _Candidate] = {}
        foreign = fusion.crosslingual and not written_in(query, self.store.config.documents_language)
        crosslingual = foreign and data.crosslingual is not None and self.store.crosslingual_embedder is not None
        null_scores = data.null_scores.get("foreign" if foreign else "native", [])
        query_terms = terms(query)
        mask = search_filter.mask(data)

        bm25_scores = self._bm25_scores(data, query_terms, mask)
        if mode in ("hybrid", "bm25") and bm25_scores is not None:
            n = min(candidates, int((bm25_scores > 0).sum()))
            if n > 0:
                top = np.argpartition(-bm25_scores, n - 1)[:n]
                top = top[np.argsort(-bm25_scores[top], kind="stable")]
                for rank, row in enumerate(top):
                    found.setdefault(int(row), _Candidate(int(row))).ranks["bm25"] = rank

        query_vector: Vector | None = None
        dense_scores: npt.NDArray[np.float32] | None = None
        if mode in ("hybrid", "dense"):
            embedder: Embedder | None = self.store.crosslingual_embedder if crosslingual else self.store.embedder
            assert embedder is not None  # crosslingual only when the store has that embedder
            ready = (prepared.vectors.get(query) if prepared is not None and embedder is self.store.embedder
                     else None)
            query_vector = ready if ready is not None else np.asarray(embed_queries(embedder, [query])[0],
                                                                      dtype=np.float32)
            # The main route searches exactly over the version's matrix; a question in another language (the
            # cross-lingual route, a minority) keeps the vector store's index: exact cosines there moved some
            # evaluation figures by a tie or two (docs/benchmarks.md), and the store's ranking is the calibrated one.
            matrix = None if crosslingual else data.vectors
            if matrix is not None:
                check_embedded_with(kb, data.version, data.embedder, embedder)
                # exact: every chunk's cosine in one product with the version's memory-mapped vectors
                cosines = None if prepared is None else prepared.cosines.get((kb, data.version, query))
                dense_scores = cosines if cosines is not None else dense_products(matrix, query_vector[None, :])[0]
                allowed = dense_scores if mask is None else np.where(mask, dense_scores, -np.inf)
                n = min(max(1, candidates), len(allowed) if mask is None else int(mask.sum()))
                if n > 0:
                    top = np.argpartition(-allowed, n - 1)[:n]
                    top = top[np.lexsort((top, -allowed[top]))]
                    for rank, row in enumerate(top):
                        cand = found.setdefault(int(row), _Candidate(int(row)))
                        cand.dense = float(dense_scores[row])
                        cand.ranks["dense"] = rank
            else:  # versions built before the vector matrices: the vector store's index
                collection = self.store.collection(kb, data.version, crosslingual=crosslingual)
                result = collection.query(query_embeddings=[query_vector.tolist()], n_results=max(1, candidates),
                                          where=search_filter.chroma_where(), include=["distances"])
                distances = result["distances"]
                if distances is None:  # asked for with include=["distances"]
                    raise RuntimeError("the vector store returned no distances")
                for rank, (cid, distance) in enumerate(zip(result["ids"][0], distances[0])):
                    row = data.row_of.get(cid)
                    if row is None:
                        continue
                    cand = found.setdefault(row, _Candidate(row))
                    cand.dense = 1.0 - float(distance)
                    cand.ranks["dense"] = rank

        if not found:
            return []
        rows = list(found)
        if bm25_scores is not None:
            for row in rows:
                found[row].bm25 = float(bm25_scores[row])
        if dense_scores is not None:
            for cand in found.values():
                if cand.dense is None:
                    cand.dense = float(dense_scores[cand.row])
        if query_vector is not None:
            self._fill_dense(data, found, query_vector, crosslingual=crosslingual)
            for cand in found.values():
                cand.relevance = relevance(cand.dense, null_scores)
        second_weight = (min(fusion.crosslingual_weight, fusion.dense_weight) if mode == "hybrid" and fusion.method == "weighted"
                         and fusion.crosslingual and not foreign and data.crosslingual is not None else 0.0)
        second_embedder = self.store.crosslingual_embedder
        if second_weight > 0 and second_embedder is not None:
            second_vector = np.asarray(embed_queries(second_embedder, [query])[0], dtype=np.float32)
            for row, cosine in self._cosines(data, list(found), second_vector, crosslingual=True).items():
                found[row].second = cosine
        else:
            second_weight = 0.0

        cands = [found[r] for r in rows]
        if mode == "dense":
            cands = [c for c in cands if "dense" in c.ranks]
        self._fuse(cands, data, mode=mode, fusion=fusion, query_terms=query_terms, foreign=foreign,
                   second_weight=second_weight)
        cands.sort(key=lambda c: (-c.fused, c.row))
        return [self._passage(data, c) for c in cands[:k]]

    def _fuse(self, cands: list[_Candidate], data: VersionData, *, mode: Mode, fusion: FusionConfig,
              query_terms: set[str], foreign: bool, second_weight: float) -> None:
        """Set each candidate's ``fused`` score."""
        if mode == "dense":
            for c in cands:
                c.fused = c.dense or 0.0
        elif mode == "bm25":
            for c in cands:
                c.fused = c.bm25
        elif fusion.method == "rrf":
            for c in cands:
                c.fused = sum(1.0 / (fusion.rrf_k + 1 + r) for r in c.ranks.values())
        else:
            dense = _minmax(np.asarray([c.dense or 0.0 for c in cands]))
            sparse = _minmax(np.asarray([c.bm25 for c in cands]))
            # a question in another language: its words count only as far as the documents use them at all
            lexical = (sum(1 for t in query_terms if t in data.bm25.vocab_dict) / len(query_terms)
                       if foreign and query_terms else 1.0)
            second = _minmax(np.asarray([c.second for c in cands])) if second_weight else np.zeros(len(cands))
            w_dense, w_bm25 = fusion.dense_weight - second_weight, (1 - fusion.dense_weight) * lexical
            w_heading = fusion.heading_weight * lexical
            for c, d, x, s in zip(cands, dense, second, sparse):
                bonus = heading_match(query_terms, data, c.row) if w_heading else 0.0
                c.fused = float(w_dense * d + second_weight * x + w_bm25 * s + w_heading * bonus)

    async def asearch(self, query: str, **kwargs: Any) -> list[Passage]:
        """:meth:`search` off the event loop (embedding and index reads are CPU and disk work)."""
        return await asyncio.to_thread(self.search, query, **kwargs)

    def vocabulary(self, kb: str, version: int | None = None) -> Mapping[str, int]:
        """The index version's terms (BM25 stems) and how many chunks contain each: :mod:`knowledge.query` asks
        whether a message has any word the documents use, and which words of an answer are the most specific."""
        data = self.store.load(kb, version)
        if not data.term_chunks:
            vocab: dict[str, int] = data.bm25.vocab_dict
            indptr = np.asarray(data.bm25.scores["indptr"])
            counts = np.diff(indptr)  # the term's column in the (terms x chunks) score matrix
            data.term_chunks = {term: int(counts[i]) for term, i in vocab.items() if 0 <= i < len(counts)}
        return data.term_chunks

    async def avocabulary(self, kb: str, version: int | None = None) -> Mapping[str, int]:
        """:meth:`vocabulary` off the event loop (the first use of a version loads it from disk)."""
        return await asyncio.to_thread(self.vocabulary, kb, version)

    # --- helpers -----------------------------------------------------------------------------------
    def _bm25_scores(self, data: VersionData, query_terms: set[str],
                     mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.float32]:
        vocab: dict[str, int] = data.bm25.vocab_dict
        ids = sorted(vocab[w] for w in query_terms if w in vocab)
        if not ids:
            scores = np.zeros(len(data.chunks), dtype=np.float32)
        else:
            scores = np.asarray(data.bm25.get_scores_from_ids(ids), dtype=np.float32)
        if mask is not None:
            scores = np.where(mask, scores, -1.0).astype(np.float32)
        return scores

    def _fill_dense(self, data: VersionData, found: dict[int, _Candidate], query_vector: Vector, *,
                    crosslingual: bool) -> None:
        missing = [c.row for c in found.values() if c.dense is None]
        for row, cosine in self._cosines(data, missing, query_vector, crosslingual=crosslingual).items():
            found[row].dense = cosine

    def _cosines(self, data: VersionData, rows: list[int], query_vector: Vector, *,
                 crosslingual: bool) -> dict[int, float]:
        """The cosine of each chunk (row) to the query, from its stored vector: a dot product with the version's
        memory-mapped matrix, or (versions built before it) the vectors fetched from the vector store."""
        if not rows:
            return {}
        matrix = data.crosslingual_vectors if crosslingual else data.vectors
        if matrix is not None:
            scores = np.asarray(matrix[np.asarray(rows)], dtype=np.float32) @ query_vector
            return {row: float(score) for row, score in zip(rows, scores)}
        collection = self.store.collection(data.kb, data.version, crosslingual=crosslingual)
        got = collection.get(ids=[data.chunks[row].chunk_id for row in rows], include=["embeddings"])
        embeddings = got["embeddings"]
        if embeddings is None:  # asked for with include=["embeddings"]
            raise RuntimeError("the vector store returned no embeddings")
        by_id = dict(zip(got["ids"], embeddings))
        out: dict[int, float] = {}
        for row in rows:
            vector = by_id.get(data.chunks[row].chunk_id)
            if vector is not None:
                out[row] = float(np.dot(np.asarray(vector, dtype=np.float32), query_vector))
        return out

    @staticmethod
    def _passage(data: VersionData, c: _Candidate) -> Passage:
        chunk = data.chunks[c.row]
        return Passage(
            chunk_id=chunk.chunk_id, doc_id=chunk.doc_id, kb=data.kb, knowledge_set=chunk.knowledge_set,
            title=chunk.title, location=display_location(chunk.location, chunk.doc_id),  # never a server path
            heading=chunk.heading, text=chunk.text,
            score=round(c.fused, 6), index_version=data.version, dense_score=c.dense,
            bm25_score=c.bm25 if c.bm25 >= 0 else None, relevance=c.relevance,
        )


def lead(ranking: list[Passage]) -> float:
    """How clearly a ranking's best document stands out: its best passage's score minus the best score of a
    passage of another document (the whole score when every passage is of one document; 0 when empty)."""
    if not ranking:
        return 0.0
    top = ranking[0]
    return next((top.score - p.score for p in ranking if p.doc_id != top.doc_id), top.score)


def _merge(rankings: list[list[Passage]], k: int, *, confident: bool = False) -> list[Passage]:
    """One ranking from several (reciprocal rank; ties keep the first ranking's order). ``confident``: each
    ranking's reciprocal ranks weighted by its :func:`lead` plus :data:`ALTERNATIVE_LEAD_FLOOR` (the rankings'
    scores must be on one scale: weighted fusion's)."""
    score: dict[str, float] = {}
    first: dict[str, Passage] = {}
    for ranking in rankings:
        weight = lead(ranking) + ALTERNATIVE_LEAD_FLOOR if confident else 1.0
        for rank, passage in enumerate(ranking):
            score[passage.chunk_id] = score.get(passage.chunk_id, 0.0) + weight / (ALTERNATIVE_RRF_K + rank + 1)
            first.setdefault(passage.chunk_id, passage)
    merged = sorted(first.values(), key=lambda p: -score[p.chunk_id])[:k]
    return [p.model_copy(update={"score": round(score[p.chunk_id], 6)}) for p in merged]


def relevant_enough(passages: list[Passage], *, level: float | None, min_score: float) -> bool:
    """May an answer be given from ``passages``? With a ``level`` and a calibrated version: the best passage's
    calibrated relevance reaches it (:mod:`knowledge.calibration`); otherwise (releases made before the
    calibration, versions built before it) the best passage's raw cosine reaches ``min_score``."""
    calibrated = [p.relevance for p in passages if p.relevance is not None]
    if level is not None and calibrated:
        return max(calibrated) >= level
    return max((p.dense_score or 0.0 for p in passages), default=0.0) >= min_score
