"""What retrieval hands to the answer path: a ranked passage that knows its source."""

from __future__ import annotations

from pydantic import BaseModel


class Passage(BaseModel):
    """One retrieved chunk with everything needed to cite it."""

    chunk_id: str
    doc_id: str
    kb: str
    knowledge_set: str
    title: str
    location: str
    heading: str
    text: str
    score: float
    index_version: int
    dense_score: float | None = None  # cosine to the question (the cross-lingual embedder's, for another language)
    bm25_score: float | None = None
    #: Calibrated relevance in [0, 1]: the share of unrelated questions whose best cosine is lower
    #: (knowledge.calibration); None when the index version is not calibrated.
    relevance: float | None = None
