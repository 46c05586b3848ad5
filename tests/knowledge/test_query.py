"""The offline search query (knowledge/query.py): which messages are follow-ups, what is carried into the query,
and that it finds the right document in the sample index where the message alone does not."""

from __future__ import annotations

import pytest

from knowledge.query import ChatTurn, content_words, follow_up_reason, offline_query
from knowledge.retrieval import Retriever

KB = "default"


def user(text: str) -> ChatTurn:
    return ChatTurn(role="user", text=text)


def assistant(text: str) -> ChatTurn:
    return ChatTurn(role="assistant", text=text)


VPN = [user("vpn not working"),
       assistant("Most VPN problems have one of four causes: you were signed out, the handshake did not complete, "
                 "the device is not compliant, or DNS. Switch NorthGate to TCP fallback on hotel Wi-Fi [1].")]


@pytest.mark.parametrize("message, reason", [
    ("and if that doesn't help?", "opens with 'and if'"),
    ("What about Canada?", "opens with 'what about'"),
    ("same for contractors?", "opens with 'same for'"),
    ("why?", "no content word"),
    ("ok thanks", "no content word"),
    ("vacation?", "one content word"),
    ("can I install it on my phone?", "points back ('it')"),
    ("who approves those?", "one content word"),
    ("is that covered by insurance too?", "points back ('that')"),
])
def test_elliptical_messages_are_follow_ups(message: str, reason: str) -> None:
    assert follow_up_reason(message) == reason


@pytest.mark.parametrize("message", [
    "How do I request parental leave?",
    "What is the per diem in Canada?",
    "my laptop screen is cracked, who repairs it?",
    "What is the policy on remote work and how do I apply for it from another country?",
    "And another thing: how many sick days can employees take per year without a doctor's note?",  # long: opener ignored
])
def test_self_contained_messages_are_searched_as_written(message: str) -> None:
    assert follow_up_reason(message) is None
    query = offline_query(message, VPN)
    assert (query.text, query.carried) == (message, ())
    assert query.alternative is not None and query.alternative.startswith(f"{message} vpn"), (
        "and also with the thread's topic, in case it is one")
    assert offline_query(message, []).alternative is None, "no thread: nothing else to search"


def test_a_message_that_announces_a_new_topic_gets_no_alternative() -> None:
    query = offline_query("Different question: how do I request parental leave?", VPN)
    assert (query.text, query.alternative) == ("Different question: how do I request parental leave?", None)


def test_a_follow_up_carries_the_previous_questions_topic() -> None:
    query = offline_query("and if that doesn't help?", VPN)
    assert query.carried == ("vpn", "working")
    assert query.text == "and if that doesn't help? vpn working"
    assert query.follow_up and query.reason == "opens with 'and if'"


def test_a_change_of_topic_carries_nothing() -> None:
    query = offline_query("How do I request parental leave?", VPN)
    assert query.text == "How do I request parental leave?" and not query.follow_up


def test_words_the_message_already_has_are_not_carried_again() -> None:
    query = offline_query("and the VPN on my phone?", VPN)
    assert query.carried == ("working",), "'VPN' is in the message already (compared by stem)"


def test_a_chain_of_follow_ups_keeps_its_topic() -> None:
    history = [user("How many days of annual leave do I get?"), assistant("25 days a year [1]."),
               user("and can I carry them over?"), assistant("Up to 5 days, used by 31 March [1].")]
    query = offline_query("what if I don't use them by then?", history)
    assert set(query.carried) >= {"days", "annual", "leave"}, "the earlier follow-up was resolved first"
    assert "carry" in query.carried


def test_the_last_answers_most_specific_words_are_carried() -> None:
    chunks = {"vpn": 16, "work": 40, "handshak": 2, "complet": 9, "devic": 30, "complianc": 3, "compliant": 3,
              "dns": 2, "northgat": 12, "tcp": 2, "fallback": 4, "hotel": 11, "wi": 8, "fi": 8, "switch": 6,
              "request": 20, "parent": 5, "leav": 30}
    query = offline_query("and then?", VPN, vocabulary=chunks)
    assert query.carried == ("vpn", "working", "handshake", "dns", "tcp", "compliant"), \
        "the question's topic, then the four answer words the fewest chunks contain (ties: first said first)"
    assert offline_query("and then?", VPN).carried == ("vpn", "working"), "no vocabulary: no answer word"
    assert offline_query("How do I request parental leave?", VPN, vocabulary=chunks).carried == ()


def test_only_the_answer_to_the_previous_question_is_used() -> None:
    history = [*VPN, user("ok, and which gateway is in Toronto?")]  # not answered yet
    query = offline_query("and in Lisbon?", history, vocabulary={"dns": 1, "gateway": 2, "lisbon": 1})
    assert "dns" not in query.carried


def test_without_history_a_follow_up_is_searched_as_written() -> None:
    query = offline_query("and if that doesn't help?", [])
    assert query.text == "and if that doesn't help?" and not query.follow_up
    assert query.reason == "opens with 'and if'; no earlier question to carry from"


def test_no_word_the_index_knows_makes_a_follow_up() -> None:
    vocabulary = {"vpn": 16, "work": 40, "leav": 30}
    assert follow_up_reason("ugh, still broken", vocabulary) == "no content word in the index"
    assert follow_up_reason("ugh, still broken", None) is None, "without a vocabulary: two content words"
    assert offline_query("ugh, still broken", VPN, vocabulary=vocabulary).carried[:2] == ("vpn", "working")


def test_content_words_drop_function_words_and_keep_order() -> None:
    assert content_words("How do I connect to the VPN from the hotel? The VPN!") == ["connect", "vpn", "hotel"]


def test_carried_words_are_bounded() -> None:
    history = [user("expense report travel hotel flight taxi dinner receipt approval deadline currency")]
    assert len(offline_query("and then?", history).carried) == 8


# --- on the sample index ------------------------------------------------------------------------------------
def test_the_follow_up_finds_the_vpn_page_the_message_alone_does_not(sample_retriever: Retriever) -> None:
    vocabulary = sample_retriever.vocabulary(KB)
    message = "and if that doesn't help?"
    alone = sample_retriever.search(message, kb=KB, k=5)
    assert "it/vpn" not in [p.doc_id for p in alone[:1]]
    query = offline_query(message, VPN, vocabulary=vocabulary)
    found = sample_retriever.search(query.text, kb=KB, k=5)
    assert found[0].doc_id == "it/vpn"


def test_the_vocabulary_is_the_indexs_stems(sample_retriever: Retriever) -> None:
    vocabulary = sample_retriever.vocabulary(KB)
    assert "vpn" in vocabulary and "northgat" in vocabulary and "zxqv" not in vocabulary
