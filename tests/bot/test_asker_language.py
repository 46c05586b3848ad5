"""Answers in the asker's language, through the real AnswerEngine (real anthropic SDK → the local fake Messages
API) and the real renderers of Slack, Teams and the local chat.

- the model path: the question reaches the model unchanged, the prompt asks for a reply in its language, and
  the citations map to the passages as for English;
- without the model (no API key, retrieval-only, the model unavailable): the extractive answer's label and its
  reason are in the asker's language, the quoted passages are the documents' own words, the citations intact;
- "not found" and the maintenance reply in the asker's language; English exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from bot.answering import AnswerEngine, maintenance_answer, not_found_answer
from bot.core.settings import Settings
from bot.core.types import Answer, Status
from bot.fallback import strip_markdown
from bot.llm import GenerationConfig
from bot.local_chat.answers import label_view
from bot.slack.rendering import render_answer
from bot.status_text import (
    DEFAULT_MAINTENANCE_MESSAGE,
    ENGLISH_WORDING,
    REASON_NO_KEY,
    REASON_RETRIEVAL_ONLY,
    answer_body,
    answer_label,
    answer_language,
    status_label,
    wording,
)
from bot.teams.cards import answer_card
from tests.bot.passages import passage
from tests.fakes.anthropic_server import FakeAnthropic, Reply, start_fake_anthropic
from tests.fakes.redis_server import RedisServer, start_redis_server

CONFIG = GenerationConfig(model="claude-haiku-4-5", max_tokens=512, timeout_s=2.0)
PASSAGES = [
    passage(0, "Leave policy", "Annual leave",
            "## Annual leave\n\nFull-time employees receive **25 days** of paid annual leave per calendar year, "
            "plus public holidays. Up to 5 unused days can be carried over into the first quarter of the next year.",
            0.81),
    passage(1, "Leave policy", "Requesting time off",
            "Request time off in [Workday](https://workday.example.com) at least two weeks before your first day "
            "off. Your manager approves or declines it within 3 working days.", 0.62),
    passage(2, "IT handbook", "VPN",
            "Install the GlobalProtect client from the Self Service portal. Connect with your single sign-on "
            "credentials.", 0.30),
]
#: The same question in the languages the issue names (and English).
QUESTIONS = {
    "de": "Wie viele Urlaubstage habe ich pro Jahr und wie beantrage ich Urlaub?",
    "es": "¿Cuántos días de vacaciones tengo al año y cómo los solicito?",
    "zh": "我每年有多少天年假？怎么申请休假？",
    "ja": "年間の有給休暇は何日ありますか？休暇はどうやって申請しますか？",
    "fr": "Combien de jours de congé ai-je par an et comment les demander ?",
    "pt": "Quantos dias de férias eu tenho por ano e como peço folga?",
    "it": "Quanti giorni di ferie ho all'anno e come li richiedo?",
    "nl": "Hoeveel vakantiedagen heb ik per jaar en hoe vraag ik verlof aan?",
    "en": "How many days of annual leave do I get per year and how do I request time off?",
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with start_redis_server() as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with start_fake_anthropic() as server:
        yield server


def settings(fake: FakeAnthropic | None) -> Settings:
    return Settings(_env_file=None, anthropic_api_key="test-key" if fake else None,  # type: ignore[call-arg]
                    anthropic_base_url=fake.url if fake else None, llm_max_retries=0, llm_timeout_s=2.0,
                    breaker_failure_threshold=5)


@pytest.fixture
async def engine(fake: FakeAnthropic, redis_client: redis.asyncio.Redis) -> AsyncIterator[AnswerEngine]:
    e = AnswerEngine(settings(fake), redis_client)
    yield e
    await e.close()


@pytest.fixture
async def keyless() -> AsyncIterator[AnswerEngine]:
    e = AnswerEngine(settings(None), None)
    yield e
    await e.close()


def quotes(text: str) -> list[tuple[str, int]]:
    """(quoted text, its [n]) of each quote line of an extractive answer."""
    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"^> (.+) \[(\d+)\]$", text, re.MULTILINE)]


def assert_quotes_are_the_documents_words(answer: Answer) -> None:
    """Every quote is verbatim from the passage its [n] cites (sentences joined with " … " when not adjacent),
    and every source is cited."""
    by_number = {s.number: s for s in answer.sources}
    found = quotes(answer.text)
    assert found, answer.text
    for text, number in found:
        source = by_number[number]
        original = next(p for p in PASSAGES if (p.doc_id, p.heading) == (source.doc_id, source.heading))
        plain = strip_markdown(original.text.replace("\n", " "))
        for piece in text.split(" … "):
            assert piece.rstrip("…") in plain, (piece, plain)
        assert source.quote == text and source.location == original.location
    assert {n for _, n in found} == set(by_number)


def rendered_labels(answer: Answer) -> tuple[str, str, dict]:
    """The label as Slack, Teams and the local chat show it (for the local chat: from the recorded fields)."""
    slack = render_answer(answer)
    teams = answer_card(answer)
    local = label_view(status_label(answer.status, fallback=answer.fallback, fallback_reason=answer.fallback_reason,
                                    language=answer_language(answer.text)))
    assert local is not None
    return slack["text"], teams["body"][0]["text"], local


# --- the model path ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["de", "zh"])
async def test_the_model_gets_the_question_unchanged_and_its_citations_still_map(
    fake: FakeAnthropic, engine: AnswerEngine, language: str
) -> None:
    question = QUESTIONS[language]
    fake.script(Reply.answer(cite=[0, 1], intro="Laut Handbuch: " if language == "de" else "根据手册："))
    answer = await engine.compose(question, [], PASSAGES, CONFIG)

    [request] = fake.message_requests
    assert "Reply in the language of the question." in request.body["system"][0]["text"]
    last = request.body["messages"][-1]["content"]
    assert last[-1] == {"type": "text", "text": question}, "the question is sent as the asker wrote it"
    assert [r["source"] for r in request.search_results] == [p.location for p in PASSAGES]

    assert answer.status is Status.ANSWERED and not answer.fallback
    assert "[1]" in answer.text and "[2]" in answer.text
    assert [(s.number, s.doc_id, s.heading) for s in answer.sources] == [
        (1, "leave-policy", "Annual leave"), (2, "leave-policy", "Requesting time off")]
    assert answer_label(answer) is None, "a model answer carries no label, in any language"


async def test_the_model_declining_gives_not_found_in_the_askers_language(
    fake: FakeAnthropic, engine: AnswerEngine
) -> None:
    fake.script(Reply.not_found("NOT_FOUND Die Unterlagen behandeln nur Urlaub und VPN."))
    answer = await engine.compose("Wie hoch ist die Reisekostenpauschale für Kanada?", [], PASSAGES, CONFIG)
    de = wording("de")
    assert answer.status is Status.NOT_FOUND
    assert answer.text == (f"{de.not_found}\n\nDie Unterlagen behandeln nur Urlaub und VPN.\n\n"
                           f"{de.closest_sources}")
    assert [s.number for s in answer.sources] == [1, 2, 3]
    slack, teams, local = rendered_labels(answer)
    assert slack.startswith("Nicht im Handbuch gefunden — ") and "**Nicht im Handbuch gefunden**" in teams
    assert local["title"] == "Nicht im Handbuch gefunden"


# --- without the model: the extractive fallback --------------------------------------------------------------


@pytest.mark.parametrize("language", ["de", "es", "zh", "ja", "fr", "pt", "it", "nl"])
async def test_without_an_api_key_the_excerpt_is_labelled_in_the_askers_language(
    keyless: AnswerEngine, language: str
) -> None:
    words = wording(language)
    answer = await keyless.compose(QUESTIONS[language], [], PASSAGES, CONFIG)

    assert answer.status is Status.ANSWERED and answer.fallback
    assert answer.fallback_reason == REASON_NO_KEY, "the reason is recorded in English (operators' figures)"
    first_line = answer.text.splitlines()[0]
    assert first_line == f"_{words.excerpt_title} — {words.excerpt_note}{words.open}" \
                         f"{words.reasons[REASON_NO_KEY]}{words.close}{words.stop}_"
    assert "Automatic excerpt" not in answer.text and "no API key" not in answer.text
    assert_quotes_are_the_documents_words(answer)

    label = answer_label(answer)
    assert label is not None and label.warning
    assert label.title == words.excerpt_title
    assert label.detail == f"{words.excerpt_detail}{words.open}{words.reasons[REASON_NO_KEY]}{words.close}{words.stop}"
    slack, teams, local = rendered_labels(answer)
    assert words.excerpt_title in slack and words.reasons[REASON_NO_KEY] in slack
    assert f"**{words.excerpt_title}**" in teams and words.reasons[REASON_NO_KEY] in teams
    assert (local["title"], local["detail"]) == (label.title, label.detail)
    body = answer_body(answer.text, fallback=True, fallback_reason=answer.fallback_reason)
    assert body.startswith("> ") and words.excerpt_title not in body, "the label is shown once, above the body"


@pytest.mark.parametrize(("language", "allow_llm", "script", "reason"), [
    ("es", False, None, "las respuestas de IA están desactivadas"),
    ("de", True, Reply.overloaded(), "das KI-Modell ist nicht erreichbar"),
    ("ja", True, Reply.unauthorized(), "AI モデルへのリクエストに失敗しました"),
])
async def test_every_reason_is_worded_in_the_askers_language(
    fake: FakeAnthropic, engine: AnswerEngine, language: str, allow_llm: bool, script: Reply | None, reason: str
) -> None:
    if script is not None:
        fake.always(script)
    answer = await engine.compose(QUESTIONS[language], [], PASSAGES, CONFIG, allow_llm=allow_llm)
    assert answer.fallback
    if not allow_llm:
        assert answer.fallback_reason == REASON_RETRIEVAL_ONLY
    else:
        assert answer.fallback_reason is not None and answer.fallback_reason.startswith("the AI model")
    label = answer_label(answer)
    assert label is not None and label.title == wording(language).excerpt_title and reason in label.detail
    assert "(529)" not in label.detail and "(401)" not in label.detail, "the technical detail is for operators"
    assert_quotes_are_the_documents_words(answer)


async def test_english_is_unchanged(keyless: AnswerEngine) -> None:
    answer = await keyless.compose(QUESTIONS["en"], [], PASSAGES, CONFIG)
    assert answer.text.startswith("_Automatic excerpt — not written by the AI model (no API key configured)._\n\n> ")
    assert_quotes_are_the_documents_words(answer)
    slack, teams, local = rendered_labels(answer)
    assert slack.startswith(
        "Automatic excerpt — quoted from the sources, not written by the AI model (no API key configured).\n")
    assert teams == ("⚠️ **Automatic excerpt** — quoted from the sources, not written by the AI model "
                     "(no API key configured).")
    assert local["title"] == "Automatic excerpt"

    declined = await keyless.compose(QUESTIONS["en"], [], [], CONFIG)
    assert declined.status is Status.NOT_FOUND
    assert declined.text == "I couldn't find this in the handbook or the other documents I can search."
    closest = not_found_answer(PASSAGES, question=QUESTIONS["en"])
    assert closest.text == ("I couldn't find this in the handbook or the other documents I can search.\n\n"
                            "These are the closest sources I found; they may still help:")
    label = answer_label(closest)
    assert label is not None and label.text == ("Not found in the handbook — nothing here answers this, "
                                                "so I won't guess.")


async def test_a_very_short_message_gets_english(keyless: AnswerEngine) -> None:
    answer = await keyless.compose("ok?", [], PASSAGES, CONFIG)
    assert answer.text.startswith("_Automatic excerpt — not written by the AI model (no API key configured)._")
    assert not_found_answer([], question="ok?").text == ENGLISH_WORDING.not_found


# --- not found and maintenance -------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["de", "es", "zh", "ja", "fr", "pt", "it", "nl"])
async def test_not_found_in_the_askers_language(keyless: AnswerEngine, language: str) -> None:
    words = wording(language)
    nothing = await keyless.compose(QUESTIONS[language], [], [], CONFIG)
    assert nothing.status is Status.NOT_FOUND and nothing.text == words.not_found and nothing.sources == []

    closest = not_found_answer(PASSAGES, question=QUESTIONS[language])  # the pipeline's "nothing relevant enough"
    assert closest.text == f"{words.not_found}\n\n{words.closest_sources}"
    assert [(s.number, s.doc_id) for s in closest.sources] == [
        (1, "leave-policy"), (2, "leave-policy"), (3, "it-handbook")]
    assert answer_label(closest) == words.not_found_label
    slack, teams, local = rendered_labels(closest)
    assert slack.startswith(words.not_found_label.text)
    assert f"**{words.not_found_label.title}**" in teams
    assert local["title"] == words.not_found_label.title


def test_the_default_maintenance_reply_is_in_the_askers_language() -> None:
    answer = maintenance_answer(DEFAULT_MAINTENANCE_MESSAGE, QUESTIONS["nl"], release="r1")
    assert (answer.status, answer.release, answer.text) == (Status.MAINTENANCE, "r1",
                                                            wording("nl").maintenance_message)
    assert answer_label(answer) == wording("nl").maintenance_label
    english = maintenance_answer(DEFAULT_MAINTENANCE_MESSAGE, QUESTIONS["en"])
    assert english.text == DEFAULT_MAINTENANCE_MESSAGE and answer_label(english) == ENGLISH_WORDING.maintenance_label
    custom = maintenance_answer("Back at 14:00 CET.", QUESTIONS["de"])
    assert custom.text == "Back at 14:00 CET.", "an operator's own message is sent as written"
    assert answer_label(custom) == ENGLISH_WORDING.maintenance_label, "…under a label in the same language"
