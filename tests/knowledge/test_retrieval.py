"""Hybrid retrieval on the bundled sample knowledge base (the session's shared index, read-only).

These are the properties the answer path relies on: the right document first for a plain question; filters
that keep restricted or out-of-scope sources out of every retriever's candidates; a dense score that tells an
unrelated question apart (the pipeline's ``min_score``); and fusion weights that do what docs/retrieval.md says.
"""

from __future__ import annotations

import dataclasses

import pytest

from feedback.interactions import relevance
from knowledge.index import IndexNotFound
from knowledge.retrieval import FusionConfig, Retriever, SearchFilter, _Candidate, terms

KB = "default"
#: The sample's documents marked ``visibility: restricted`` (everything else is public).
RESTRICTED = {"engineering/deploy-freeze", "engineering/incident-severity", "engineering/on-call",
              "engineering/production-access", "security/incident-response-contacts"}
ON_CALL = "How does the engineering on-call rotation work and how is on-call compensated?"
MIN_SCORE = 0.3  # the default release's min_score (Settings.retrieval_min_score)


@pytest.mark.parametrize("question,doc_id", [
    ("How much is the meal per diem when I travel in Europe?", "travel/per-diem"),
    ("how many weeks of parental leave do I get", "people/parental-leave"),
    ("vpn not working", "it/vpn"),
    ("How do I report a phishing email?", "security/phishing"),
    ("I lost my phone", "security/lost-device"),
])
def test_a_known_question_finds_its_document_first(sample_retriever: Retriever, question: str, doc_id: str) -> None:
    passages = sample_retriever.search(question, kb=KB, k=5)
    assert passages and passages[0].doc_id == doc_id, [p.doc_id for p in passages]
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert relevance(passages) >= MIN_SCORE, "a relevant question clears the not-found threshold"
    top = passages[0]
    assert top.kb == KB and top.index_version >= 1 and top.text and top.location


def test_the_index_knows_which_sample_documents_are_restricted(sample_retriever: Retriever) -> None:
    data = sample_retriever.store.load(KB)
    restricted = {chunk.doc_id for chunk, public in zip(data.chunks, data.public) if not public}
    assert restricted == RESTRICTED


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_public_only_never_returns_a_restricted_document(sample_retriever: Retriever, mode: str) -> None:
    unfiltered = sample_retriever.search(ON_CALL, kb=KB, k=10, mode=mode)  # type: ignore[arg-type]
    assert unfiltered[0].doc_id == "engineering/on-call", "the restricted page is what answers it unfiltered"

    public = sample_retriever.search(ON_CALL, kb=KB, k=10, mode=mode,  # type: ignore[arg-type]
                                     search_filter=SearchFilter(public_only=True))
    assert public, "public sources are still searched"
    assert not {p.doc_id for p in public} & RESTRICTED, [p.doc_id for p in public]


def test_knowledge_sets_limit_what_may_be_cited(sample_retriever: Retriever) -> None:
    question = "How much is the meal per diem when I travel in Europe?"
    it_only = sample_retriever.search(question, kb=KB, k=8, search_filter=SearchFilter(knowledge_sets=["it"]))
    assert it_only and {p.knowledge_set for p in it_only} == {"it"}

    two = sample_retriever.search(ON_CALL, kb=KB, k=10,
                                  search_filter=SearchFilter(knowledge_sets=["people", "travel"]))
    assert two and {p.knowledge_set for p in two} <= {"people", "travel"}

    both = sample_retriever.search(ON_CALL, kb=KB, k=10,
                                   search_filter=SearchFilter(knowledge_sets=["engineering", "it"], public_only=True))
    assert both and {p.knowledge_set for p in both} == {"it"}, "sets and visibility combine"

    assert sample_retriever.search(question, kb=KB, search_filter=SearchFilter(knowledge_sets=[])) == [], \
        "an empty list of sets allows nothing (None means all)"


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_an_empty_query_returns_nothing(sample_retriever: Retriever, query: str) -> None:
    assert sample_retriever.search(query, kb=KB) == []


@pytest.mark.parametrize("query", ["zxqv blorft", "the and of", "Who won the 1998 football world cup?"])
def test_a_query_without_matching_terms_is_below_the_not_found_threshold(sample_retriever: Retriever,
                                                                         query: str) -> None:
    passages = sample_retriever.search(query, kb=KB, k=5)
    assert len(passages) == 5, "dense retrieval still proposes the closest passages"
    assert relevance(passages) < MIN_SCORE, "so the pipeline answers 'not found' instead of guessing"
    assert sample_retriever.search("zxqv blorft", kb=KB, mode="bm25") == [], "no term in the corpus: no BM25 hit"


def test_k_bounds_the_number_of_passages(sample_retriever: Retriever) -> None:
    assert len(sample_retriever.search("annual leave", kb=KB, k=3)) == 3
    assert sample_retriever.search("annual leave", kb=KB, k=0) == []


def test_a_missing_index_version_is_index_not_found(sample_retriever: Retriever) -> None:
    """The pipeline turns this error into a 'not found' answer instead of failing the job."""
    with pytest.raises(IndexNotFound):
        sample_retriever.search("annual leave", kb=KB, version=999)


async def test_asearch_matches_search(sample_retriever: Retriever) -> None:
    question = "vpn not working"
    assert await sample_retriever.asearch(question, kb=KB, k=4) == sample_retriever.search(question, kb=KB, k=4)


# --- fusion ---------------------------------------------------------------------------------------------
def test_fusion_weights_choose_between_dense_and_bm25_rankings(sample_retriever: Retriever) -> None:
    """``weighted`` fusion is a convex combination: weight 1 ranks by the dense score, weight 0 by BM25."""
    question = "sick days"
    dense = sample_retriever.search(question, kb=KB, k=8, fusion=FusionConfig(dense_weight=1.0, heading_weight=0,
                                                                              crosslingual_weight=0))
    sparse = sample_retriever.search(question, kb=KB, k=8, fusion=FusionConfig(dense_weight=0.0, heading_weight=0))

    dense_scores = [p.dense_score or 0.0 for p in dense]
    assert dense_scores == sorted(dense_scores, reverse=True)
    bm25_scores = [p.bm25_score or 0.0 for p in sparse]
    assert bm25_scores == sorted(bm25_scores, reverse=True)
    assert [p.chunk_id for p in dense] != [p.chunk_id for p in sparse], "the weight changes the ranking"
    assert dense[0].score == pytest.approx(1.0) and sparse[0].score == pytest.approx(1.0), "normalised per query"


def test_heading_weight_favours_the_section_named_like_the_question(sample_retriever: Retriever) -> None:
    """The bonus is ``heading_weight`` × the share of the question's terms in the chunk's title and heading."""
    question = "parental leave pay"
    everything = 200  # every candidate, so both rankings hold the same chunks
    without = sample_retriever.search(question, kb=KB, k=everything, fusion=FusionConfig(heading_weight=0.0))
    strong = sample_retriever.search(question, kb=KB, k=everything, fusion=FusionConfig(heading_weight=1.0))
    assert "pays" not in without[0].heading.lower()
    assert strong[0].doc_id == "people/parental-leave" and "pays" in strong[0].heading.lower(), strong[0].heading

    before = {p.chunk_id: p.score for p in without}
    assert set(before) == {p.chunk_id for p in strong}
    asked = terms(question)
    for p in strong:
        share = len(asked & terms(f"{p.title} {p.heading}")) / len(asked)
        assert p.score - before[p.chunk_id] == pytest.approx(share, abs=1e-5), (p.title, p.heading)


def test_rrf_and_config_from_a_stored_release(sample_retriever: Retriever) -> None:
    """Releases store fusion as a dict; unknown keys (from an older or newer version) are ignored."""
    config = FusionConfig.from_dict({"method": "rrf", "rrf_k": 60, "retired_option": True})
    assert config == FusionConfig(method="rrf", rrf_k=60, crosslingual=False, alternative_merge="rrf"), \
        "no key: made before cross-lingual and before the confidence merge (a release searches as it did)"
    assert FusionConfig.from_dict({"crosslingual": True}).crosslingual
    assert FusionConfig.from_dict({"alternative_merge": "confidence"}).alternative_merge == "confidence"
    assert FusionConfig.from_dict(None) == FusionConfig()
    passages = sample_retriever.search("How do I report a phishing email?", kb=KB, k=5, fusion=config)
    assert passages[0].doc_id == "security/phishing"
    assert all(0 < p.score <= 2 / 61 + 1e-6 for p in passages), "reciprocal-rank scores of two retrievers"


def test_a_server_path_stored_by_an_older_index_never_reaches_a_passage(sample_retriever: Retriever) -> None:
    """Passages feed the model's citations and the recorded sources: an absolute path is cut at retrieval."""
    data = sample_retriever.store.load(KB)
    row = next(i for i, c in enumerate(data.chunks) if "/" in c.doc_id)
    chunk = data.chunks[row]
    old = dataclasses.replace(chunk, location=f"/srv/deskmate/knowledge/{chunk.doc_id}.md")
    stale = dataclasses.replace(data, chunks=[*data.chunks[:row], old, *data.chunks[row + 1:]])
    passage = Retriever._passage(stale, _Candidate(row=row, fused=0.5))
    assert passage.location == f"{chunk.doc_id}.md"
    assert "/srv" not in passage.location


def test_a_second_query_is_merged_without_pushing_the_first_ones_best_page_down(sample_retriever: Retriever) -> None:
    """A thread's self-contained message is also searched with the thread's words (knowledge.query): a real
    change of topic keeps its page first. Its own ranking singles the phishing page out more clearly than the
    thread's query does, so the confidence merge keeps the message's passages ahead of the thread's; plain
    reciprocal rank (releases with ``alternative_merge="rrf"``) weighs both rankings alike and offers the
    thread's page among the six."""
    question = "How do I report a phishing email?"
    alternative = f"{question} vpn working northgate"
    alone = sample_retriever.search(question, kb=KB, k=6)
    both = sample_retriever.search(question, kb=KB, k=6, alternative=alternative)
    assert both[0].doc_id == alone[0].doc_id == "security/phishing"
    assert [p.doc_id for p in both] == [p.doc_id for p in alone], "a confident message keeps its own passages"
    assert len(both) == 6 and [p.score for p in both] == sorted((p.score for p in both), reverse=True)
    plain = sample_retriever.search(question, kb=KB, k=6, alternative=alternative,
                                    fusion=FusionConfig(alternative_merge="rrf"))
    assert plain[0].doc_id == "security/phishing" and "it/vpn" in {p.doc_id for p in plain}
    assert sample_retriever.search(question, kb=KB, k=6, alternative=f"  {question} ") == alone


def test_the_second_embedders_opinion_is_a_tenth_of_an_english_questions_score(sample_retriever: Retriever) -> None:
    """With the cross-lingual vectors, an English question's dense share (0.7) is split 0.6 / 0.1 between the
    main embedder and the cross-lingual one: the ranking moves, and only a little."""
    question = "can I use my own laptop for work"
    both = sample_retriever.search(question, kb=KB, k=8, fusion=FusionConfig())
    main_only = sample_retriever.search(question, kb=KB, k=8, fusion=FusionConfig(crosslingual_weight=0))
    assert [p.score for p in both] != [p.score for p in main_only]
    assert {p.doc_id for p in both[:3]} & {p.doc_id for p in main_only[:3]}
    assert all(p.dense_score is not None and p.relevance is not None for p in both), "main-embedder cosines"


def test_an_off_topic_message_in_a_thread_is_not_made_answerable_by_the_threads_page(
        sample_retriever: Retriever) -> None:
    from knowledge.retrieval import relevant_enough

    question = "Who won the 1990 football world cup?"
    own = {p.chunk_id for p in sample_retriever.search(question, kb=KB, k=6)}
    both = sample_retriever.search(question, kb=KB, k=6, alternative=f"{question} vpn globalprotect client install")
    offered = [p for p in both if p.chunk_id not in own]
    assert offered and {p.doc_id for p in offered} == {"it/vpn"}, "the thread's page is offered"
    assert all(p.relevance is None for p in offered), "but it does not vouch for the answer"
    assert not relevant_enough(both, level=0.75, min_score=0.3)


def _thread_search(retriever: Retriever, history: list[tuple[str, str]], message: str,
                   fusion: FusionConfig) -> list[str]:
    """Documents found for ``message`` the way the worker's offline path searches it in a thread."""
    from knowledge.query import ChatTurn, offline_query

    turns = [ChatTurn(role="user" if role == "user" else "assistant", text=text) for role, text in history]
    query = offline_query(message, turns, vocabulary=retriever.vocabulary(KB))
    assert query.alternative, "a message the rules call self-contained, searched with the thread's words too"
    passages = retriever.search(query.text, kb=KB, k=8, fusion=fusion, alternative=query.alternative)
    return [p.doc_id for p in passages]


def test_a_follow_up_the_rules_miss_gets_its_threads_page_first(sample_retriever: Retriever) -> None:
    """The message alone matches many pages alike; with the thread's words one page stands out. The merge trusts
    the ranking whose best page stands out, so the answer is drawn from the travel page the thread is about —
    plain reciprocal rank put the message's own (flat) favourite first."""
    history = [("user", "what happens if i get sick on a business trip abroad?"),
               ("assistant", "Call the GlobeGuard assistance line, +44 20 7946 0321 (24/7). They can arrange a "
                             "doctor, pay the hospital directly and organise travel home. Then tell your manager.")]
    message = "does that still work if i tack 2 vacation days onto a 6 day trip?"
    found = _thread_search(sample_retriever, history, message, FusionConfig())
    assert found[0] == "travel/international-travel", found
    before = _thread_search(sample_retriever, history, message, FusionConfig(alternative_merge="rrf"))
    assert before[0] != "travel/international-travel", "the case the confidence merge exists for"


def test_a_change_of_topic_in_a_thread_keeps_its_own_page_first(sample_retriever: Retriever) -> None:
    """A clear question about something else, asked in a thread about the VPN, keeps its own page on top: the
    message's own ranking is the confident one, and the thread's words do not outweigh it."""
    history = [("user", "vpn not working"),
               ("assistant", "Check that GlobalProtect is connected to the NorthGate portal and restart it.")]
    found = _thread_search(sample_retriever, history, "How many weeks of parental leave do I get?", FusionConfig())
    assert found[0] == "people/parental-leave", found


def test_the_lead_of_a_ranking_is_its_best_documents_margin_over_another(sample_retriever: Retriever) -> None:
    from knowledge.retrieval import lead

    passages = sample_retriever.search("vpn not working", kb=KB, k=30)
    assert passages[1].doc_id == passages[0].doc_id == "it/vpn", "the page's other passages do not count"
    other = next(p for p in passages if p.doc_id != passages[0].doc_id)
    assert lead(passages) == pytest.approx(passages[0].score - other.score) and lead(passages) > 0
    assert lead(passages[:1]) == passages[0].score and lead([]) == 0.0
