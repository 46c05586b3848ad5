import re

from bot.fallback import MAX_CHARS, extractive_answer, split_sentences, stem, strip_markdown
from knowledge.passage import Passage


def slug(text: str) -> str:
    return text.lower().replace(" ", "-")


def passage(n: int, title: str, heading: str, text: str, score: float = 0.7) -> Passage:
    return Passage(
        chunk_id=f"{slug(title)}-{n}",
        doc_id=slug(title),
        kb="default",
        knowledge_set="handbook",
        title=title,
        location=f"https://intranet.example.com/{slug(title)}#{slug(heading)}",
        heading=heading,
        text=text,
        score=score,
        index_version=3,
    )


ANNUAL_LEAVE = passage(
    0,
    "Leave policy",
    "Annual leave",
    "## Annual leave\n\nFull-time employees receive **25 days** of paid annual leave per calendar year, plus public "
    "holidays. Part-time employees accrue leave pro rata to their contracted hours. Up to 5 unused days can be "
    "carried over into the first quarter of the next year; anything beyond that lapses on 31 March.",
    score=0.82,
)
REQUESTING = passage(
    1,
    "Leave policy",
    "Requesting time off",
    "To request time off:\n\n1. Open [Workday](https://workday.example.com) and go to *Time off › Request "
    "absence*.\n2. Submit the request at least two weeks before your first day off.\n3. Your manager approves "
    "or declines it within 3 working days, e.g. via the Workday app.\n\nFor absences longer than 10 consecutive "
    "days, HR must also sign off.",
    score=0.64,
)
VPN = passage(
    2,
    "IT handbook",
    "VPN",
    "Install the GlobalProtect client from the Self Service portal. Connect to `vpn.example.com` with your "
    "single sign-on credentials. If the connection drops repeatedly, open a ticket with the IT service desk.",
    score=0.41,
)
PASSAGES = [ANNUAL_LEAVE, REQUESTING, VPN]


def quotes(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("> ")]


def test_starts_with_a_clear_label_naming_the_reason() -> None:
    text, _ = extractive_answer("How many days of annual leave do I get?", PASSAGES, "retrieval-only mode")
    assert text.startswith("_Automatic excerpt — not written by the AI model (retrieval-only mode)._\n\n")


def test_quotes_the_relevant_sentences_with_numbered_sources() -> None:
    text, sources = extractive_answer("How many days of annual leave do I get?", PASSAGES, "test")
    assert "Full-time employees receive 25 days of paid annual leave per calendar year" in text
    assert "VPN" not in text and "GlobalProtect" not in text
    assert [s.number for s in sources] == [1]
    assert sources[0].doc_id == "leave-policy" and sources[0].heading == "Annual leave"
    assert sources[0].location == ANNUAL_LEAVE.location
    assert "25 days" in sources[0].quote
    assert all(re.search(r" \[1\]$", q) for q in quotes(text))


def test_finds_the_right_passage_even_when_it_is_not_ranked_first() -> None:
    text, sources = extractive_answer("Who approves my time off request?", PASSAGES, "test")
    assert "Your manager approves or declines it within 3 working days" in text
    assert sources[0].heading == "Requesting time off"


def test_stemming_matches_word_forms() -> None:
    text, sources = extractive_answer("my vpn keeps dropping", PASSAGES, "test")
    assert "If the connection drops repeatedly, open a ticket with the IT service desk." in text
    assert [s.heading for s in sources] == ["VPN"]
    assert stem("policies") == stem("policy") and stem("requested") == stem("requesting") == stem("request")


def test_several_passages_are_numbered_in_order_of_appearance() -> None:
    text, sources = extractive_answer(
        "How many days of annual leave do I get, and how do I request time off?", PASSAGES, "test"
    )
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))
    assert len(sources) >= 2
    for source in sources:
        assert f"[{source.number}]" in text
        quote_line = next(q for q in quotes(text) if q.endswith(f"[{source.number}]"))
        assert source.quote in quote_line


def test_markdown_noise_is_stripped_and_sentences_are_whole() -> None:
    text, _ = extractive_answer("How do I request time off in Workday?", PASSAGES, "test")
    for quote in quotes(text):
        assert not re.search(r"\*\*|\]\(|`|^#", quote)
        body = re.sub(r" \[\d+\]$", "", quote)
        assert body[-1] in ".!?…", body
    assert "Open Workday and go to Time off › Request absence." in text


def test_length_is_bounded() -> None:
    long_text = " ".join(
        f"Rule {i}: annual leave requests for team {i} are approved by the team lead of team {i}."
        for i in range(60)
    )
    p = passage(9, "Leave policy", "Approvals", long_text)
    text, _ = extractive_answer("who approves annual leave requests", [p, ANNUAL_LEAVE, REQUESTING], "test")
    body = "".join(re.sub(r" \[\d+\]$", "", q) for q in quotes(text))
    assert len(body) <= MAX_CHARS
    assert 1 <= len(quotes(text)) <= 5


def test_a_huge_single_sentence_is_cut_at_a_word() -> None:
    p = passage(9, "Glossary", "Terms", "Leave " + "and more leave " * 100 + "ends here.")
    text, sources = extractive_answer("leave", [p], "test")
    (quote,) = quotes(text)
    assert quote.endswith("… [1]")
    assert len(sources[0].quote) <= MAX_CHARS


def test_no_matching_words_still_quotes_the_top_passage_opening() -> None:
    text, sources = extractive_answer("What is the dress code?", PASSAGES, "test")
    assert quotes(text) == [
        "Full-time employees receive 25 days of paid annual leave per calendar year, plus public holidays. [1]"
    ]
    assert sources[0].heading == "Annual leave"


def test_no_passages() -> None:
    text, sources = extractive_answer("anything", [], "no API key configured")
    assert text.startswith("_Automatic excerpt — not written by the AI model (no API key configured)._")
    assert sources == []


def test_split_sentences_keeps_abbreviations_and_list_items() -> None:
    assert split_sentences(REQUESTING.text) == [
        "To request time off:",
        "Open Workday and go to Time off › Request absence.",
        "Submit the request at least two weeks before your first day off.",
        "Your manager approves or declines it within 3 working days, e.g. via the Workday app.",
        "For absences longer than 10 consecutive days, HR must also sign off.",
    ]


def test_strip_markdown() -> None:
    assert strip_markdown("See **the** [portal](https://x.example) and `vpn.example.com` [2].") == (
        "See the portal and vpn.example.com."
    )
    assert (
        strip_markdown("Use _Self Service_ and ![logo](a.png) <b>now</b>") == "Use Self Service and logo now"
    )


def test_table_rows_are_quoted_with_their_column_names() -> None:
    from knowledge.passage import Passage

    text = ("| Where you are employed | Annual leave per calendar year |\n|---|---|\n"
            "| Portugal | **25 working days** |\n| Canada | **20 working days** |\n\n"
            "Sick days do not reduce your annual leave.")
    passage = Passage(chunk_id="p#0", doc_id="people/annual-leave", kb="t", knowledge_set="people", title="Leave",
                      location="https://x/leave", heading="How much leave you get", text=text, score=1.0,
                      index_version=1, dense_score=0.6)
    answer, sources = extractive_answer("how many days of annual leave do I get in Canada?", [passage], "test")
    assert "Canada — Annual leave per calendar year: 20 working days" in answer
    assert sources[0].doc_id == "people/annual-leave"
