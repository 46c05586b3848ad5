"""How close is "close enough"? A "not found" decision calibrated per corpus, embedder and language.

A raw cosine means different things for different embedders (multilingual-e5 puts unrelated texts at 0.8,
MiniLM at 0.2), for different languages (MiniLM scores a German question against English passages far lower
than the same question in English) and for different corpora. So each index version is calibrated when it is
built: the bundled *null questions* (``assets/null_questions.jsonl``: 30 everyday questions — recipes, sports,
homework — in 9 languages, that no company handbook answers) are searched in it, and their best cosines are
kept, per search route:

- ``native``: the null questions in the documents' language, with the main embedder (how a question in the
  documents' language is searched);
- ``foreign``: the other languages' null questions, with the cross-lingual embedder when the version has its
  vectors, else the main one (how any other question is searched: :mod:`knowledge.retrieval`).

A passage's :func:`relevance` is then the share of the route's null questions whose best passage is *less*
similar than it: 0.0 = no closer than a question about boiling eggs usually gets; 1.0 = closer than any of
them. The release's ``not_found_level`` (default 0.75: an answer only from passages closer than three in four
null questions' best) is the one number an operator tunes, and it means the same for every embedder, language
and corpus. docs/retrieval.md has the measurements (answerable questions wrongly declined, unanswerable ones
wrongly answered).

A quantile of the null scores rather than their maximum keeps the decision robust when a few null questions do
match a corpus (a cooking club's page answers the recipe question).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
import numpy as np

from knowledge.embedding import embed_queries
from knowledge.index import IndexStore

NULL_QUESTIONS = Path(__file__).resolve().parent / "assets" / "null_questions.jsonl"
ROUTES = ("native", "foreign")
#: Relevance a best passage must reach for an answer (see the module's docstring); releases carry their own.
DEFAULT_NOT_FOUND_LEVEL = 0.75


@cache
def null_questions() -> tuple[tuple[str, str], ...]:
    """The bundled null questions as (language, question)."""
    rows = [json.loads(line) for line in NULL_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple((str(row["lang"]), str(row["question"])) for row in rows)


def route_questions(route: str, documents_language: str) -> list[str]:
    """The null questions searched on ``route``: the documents' language (native) or all others (foreign);
    every question when the documents' language has none."""
    language = documents_language.lower()
    native = [q for lang, q in null_questions() if lang == language]
    if route == "native":
        return native or [q for _, q in null_questions()]
    return [q for lang, q in null_questions() if lang != language]


def calibrate(store: IndexStore, kb: str, version: int, *, crosslingual: bool) -> dict[str, list[float]]:
    """Search the null questions in a freshly written version: their best cosines per route, ascending."""
    out: dict[str, list[float]] = {}
    for route in ROUTES:
        use_crosslingual = crosslingual and route == "foreign"
        embedder = store.crosslingual_embedder if use_crosslingual else store.embedder
        assert embedder is not None  # crosslingual only when the store has that embedder
        questions = route_questions(route, store.config.documents_language)
        collection = store.collection(kb, version, crosslingual=use_crosslingual)
        if not questions or collection.count() == 0:
            out[route] = []
            continue
        vectors = np.asarray(embed_queries(embedder, questions), dtype=np.float32)
        result = collection.query(query_embeddings=list(vectors), n_results=1, include=["distances"])
        distances = result["distances"] or []
        out[route] = sorted(round(1.0 - float(d[0]), 5) for d in distances if d)
    return out


def relevance(score: float | None, null_scores: Sequence[float]) -> float | None:
    """The share of null questions whose best cosine is below ``score`` (None when not calibrated)."""
    if score is None or not null_scores:
        return None
    return bisect.bisect_left(null_scores, score) / len(null_scores)
