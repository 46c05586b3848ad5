"""bot.llm through the real anthropic SDK, pointed at the local fake Messages API.

Every test that calls the API runs over both of the SDK's transports: aiohttp (``make_client``, what Deskmate
uses) and the SDK's default httpx one (a client passed in by a caller)."""

import time
from collections.abc import AsyncIterator

import pytest
from anthropic import AsyncAnthropic

from bot.llm import (
    DEFAULT_PROMPT_TEMPLATE,
    NOT_FOUND_TOKEN,
    GenerationConfig,
    LLMError,
    StreamStopped,
    Turn,
    build_messages,
    generate,
    make_client,
)
from tests.fakes.anthropic_server import FakeAnthropic, Reply, start_fake_anthropic
from tests.fakes.redis_server import free_port
from tests.bot.passages import passage

CONFIG = GenerationConfig(model="claude-haiku-4-5", max_tokens=512, timeout_s=2.0)


PASSAGES = [
    passage(
        0,
        "Leave policy",
        "Annual leave",
        "Full-time employees receive 25 days of paid annual leave per calendar year, plus public holidays. "
        "Part-time employees accrue leave pro rata to their contracted hours.",
        0.82,
    ),
    passage(
        1,
        "Leave policy",
        "Requesting time off",
        "Request leave in Workday at least two weeks before your first day off. Your manager approves or "
        "declines the request within 3 working days.",
        0.64,
    ),
    passage(
        2,
        "IT handbook",
        "IT handbook",
        "Install the GlobalProtect client from the Self Service portal. Connect with your single sign-on account.",
        0.31,
    ),
]
QUESTION = "How many days of annual leave do I get, and how do I request it?"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with start_fake_anthropic() as server:
        yield server


def new_client(transport: str, base_url: str, *, max_retries: int = 1, timeout: float = 2.0) -> AsyncAnthropic:
    if transport == "aiohttp":
        return make_client(api_key="test-key", base_url=base_url, max_retries=max_retries, timeout_s=timeout)
    return AsyncAnthropic(api_key="test-key", base_url=base_url, max_retries=max_retries, timeout=timeout)


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(fake: FakeAnthropic, transport: str) -> AsyncIterator[AsyncAnthropic]:
    c = new_client(transport, fake.url)
    yield c
    await c.close()


both_modes = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


# --- the request ------------------------------------------------------------------------------------------


async def test_passages_go_in_as_search_results_before_the_question(fake: FakeAnthropic, client) -> None:
    await generate(client, QUESTION, [], PASSAGES, CONFIG)
    (request,) = fake.requests
    last = request.body["messages"][-1]
    assert last["role"] == "user"
    assert [b["type"] for b in last["content"]] == ["search_result"] * 3 + ["text"]
    assert last["content"][-1]["text"] == QUESTION
    first = last["content"][0]
    assert first == {
        "type": "search_result",
        "source": PASSAGES[0].location,
        "title": "Leave policy › Annual leave",
        "content": [{"type": "text", "text": PASSAGES[0].text}],
        "citations": {"enabled": True},
    }
    assert last["content"][2]["title"] == "IT handbook"  # heading equal to the title is not repeated
    assert request.body["model"] == "claude-haiku-4-5"
    assert request.body["max_tokens"] == 512
    # this SDK sends the key as a bearer token; older ones used x-api-key
    assert "test-key" in request.headers.get("authorization", request.headers.get("x-api-key", ""))


async def test_system_prompt_is_cached(fake: FakeAnthropic, client) -> None:
    await generate(client, QUESTION, [], PASSAGES, CONFIG)
    system = fake.requests[0].body["system"]
    assert system == [
        {"type": "text", "text": DEFAULT_PROMPT_TEMPLATE, "cache_control": {"type": "ephemeral"}}
    ]
    assert NOT_FOUND_TOKEN in DEFAULT_PROMPT_TEMPLATE


async def test_history_becomes_earlier_messages(fake: FakeAnthropic, client) -> None:
    history = [
        Turn(role="user", text="How many days of leave do I get?"),
        Turn(role="assistant", text="Full-time employees get 25 days a year [1]."),
    ]
    await generate(client, "And can I carry some over?", history, PASSAGES, CONFIG)
    messages = fake.requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": "How many days of leave do I get?"}]
    # old markers point at sources that are not in this request
    assert messages[1]["content"] == [{"type": "text", "text": "Full-time employees get 25 days a year."}]
    assert messages[2]["content"][-1] == {"type": "text", "text": "And can I carry some over?"}


def test_history_is_made_to_alternate_starting_with_the_user() -> None:
    history = [
        Turn(role="assistant", text="Hi! Ask me about HR or IT."),
        Turn(role="user", text="Leave?"),
        Turn(role="user", text="I mean annual leave."),
        Turn(role="assistant", text=""),
    ]
    messages = build_messages("How many days?", history, PASSAGES[:1])
    assert [m["role"] for m in messages] == ["user"]
    assert [b["type"] for b in messages[0]["content"]] == ["text", "text", "search_result", "text"]


# --- the answer -------------------------------------------------------------------------------------------


@both_modes
async def test_citations_map_to_the_cited_passages(fake: FakeAnthropic, client, stream: bool) -> None:
    # the fake quotes the first sentence of search results 1, 0 and 1 again, citing each
    fake.script(Reply.answer(cite=[1, 0, 1]))
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=stream)

    assert result.text == (
        "Here is what the documents say: "
        "Request leave in Workday at least two weeks before your first day off. [1] "
        "Full-time employees receive 25 days of paid annual leave per calendar year, plus public holidays. [2] "
        "Request leave in Workday at least two weeks before your first day off. [1]"
    )
    assert [(s.number, s.heading) for s in result.sources] == [
        (1, "Requesting time off"),
        (2, "Annual leave"),
    ]
    first = result.sources[0]
    assert first.doc_id == "leave-policy"
    assert first.title == "Leave policy"
    assert first.location == PASSAGES[1].location
    assert first.quote == PASSAGES[1].text  # cited_text: the whole cited content block
    assert result.not_found is False
    assert result.stop_reason == "end_turn"
    assert result.model == "claude-haiku-4-5"
    assert fake.requests[0].stream is stream


async def test_json_and_stream_give_the_same_result(fake: FakeAnthropic, client) -> None:
    usage = {"input_tokens": 900, "cache_read_input_tokens": 700, "cache_creation_input_tokens": 0}
    fake.script(Reply.answer(cite=[0, 2], usage=usage), Reply.answer(cite=[0, 2], usage=usage))
    plain = await generate(client, QUESTION, [], PASSAGES, CONFIG)
    streamed = await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=True)
    assert streamed == plain


@both_modes
async def test_usage_includes_prompt_cache_tokens(fake: FakeAnthropic, client, stream: bool) -> None:
    first = await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=stream)
    second = await generate(client, "Another question about leave?", [], PASSAGES, CONFIG, stream=stream)
    assert first.usage.cache_write_tokens > 0 and first.usage.cache_read_tokens == 0
    assert (
        second.usage.cache_read_tokens == first.usage.cache_write_tokens
        and second.usage.cache_write_tokens == 0
    )
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0


@both_modes
async def test_dated_model_id_is_reported(fake: FakeAnthropic, client, stream: bool) -> None:
    fake.script(Reply.answer(model="claude-haiku-4-5-20251001"))
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=stream)
    assert result.model == "claude-haiku-4-5-20251001"


@both_modes
async def test_not_found_token(fake: FakeAnthropic, client, stream: bool) -> None:
    fake.script(Reply.not_found("NOT_FOUND The documents cover annual leave, not parental leave."))
    result = await generate(client, "How long is parental leave?", [], PASSAGES, CONFIG, stream=stream)
    assert result.not_found is True
    assert result.text == "The documents cover annual leave, not parental leave."
    assert result.sources == []


async def test_not_found_token_in_markdown(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.plain("**NOT_FOUND**: nothing about parking."))
    result = await generate(client, "Where do I park?", [], PASSAGES, CONFIG)
    assert result.not_found and result.text == "nothing about parking."


async def test_uncited_answer_keeps_its_text(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.plain("Hello! I can answer questions about the handbook."))
    result = await generate(client, "hi", [], PASSAGES, CONFIG)
    assert result.text == "Hello! I can answer questions about the handbook."
    assert result.sources == [] and not result.not_found


async def test_markers_go_after_the_span_before_its_trailing_space(fake: FakeAnthropic, client) -> None:
    fake.script(
        Reply.answer(
            segments=[
                ("You get ", None),
                ("**25 days** a year", 0),
                (" and must ", None),
                ("request leave in Workday\n", 1),
                ("- two weeks ahead", 1),
            ]
        )
    )
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG)
    assert result.text == (
        "You get **25 days** a year [1] and must request leave in Workday [2]\n- two weeks ahead [2]"
    )


# --- failures ---------------------------------------------------------------------------------------------


@both_modes
@pytest.mark.parametrize(
    ("reply", "reason", "transient", "attempts"),
    [
        (Reply.overloaded(), "overloaded (529)", True, 2),
        (Reply.server_error(500, retry_after_s=0.01), "server error (500)", True, 2),
        (Reply.server_error(503, retry_after_s=0.01), "server error (503)", True, 2),
        (Reply.rate_limited(retry_after_s=0.05), "rate limited (429)", True, 2),
        (Reply.malformed(), "malformed response", True, 1),
        (Reply.bad_request(), "invalid request (400)", False, 1),
        (Reply.unauthorized(), "authentication failed (401)", False, 1),
        (Reply.error(403, "permission_error"), "permission denied (403)", False, 1),
        (Reply.error(404, "not_found_error"), "model or endpoint not found (404)", False, 1),
    ],
    ids=["529", "500", "503", "429", "malformed", "400", "401", "403", "404"],
)
async def test_errors_are_classified(
    fake: FakeAnthropic, client, stream: bool, reply: Reply, reason: str, transient: bool, attempts: int
) -> None:
    fake.always(reply)
    with pytest.raises(LLMError) as caught:
        await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=stream)
    assert caught.value.reason == reason
    assert caught.value.transient is transient
    assert len(fake.requests) == attempts  # transient statuses were retried by the SDK (max_retries=1)


async def test_a_retry_can_succeed(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.rate_limited(retry_after_s=0.01))
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG)
    assert len(fake.requests) == 2
    assert result.sources[0].heading == "Annual leave"


async def test_error_event_inside_a_stream(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.stream_error("overloaded_error"))
    with pytest.raises(LLMError) as caught:
        await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=True)
    assert caught.value.transient and caught.value.reason == "overloaded"


@both_modes
async def test_timeout(fake: FakeAnthropic, transport: str, stream: bool) -> None:
    fake.always(Reply.slow(5.0))
    async with new_client(transport, fake.url, max_retries=0, timeout=60.0) as c:
        with pytest.raises(LLMError) as caught:
            await generate(
                c, QUESTION, [], PASSAGES, CONFIG.model_copy(update={"timeout_s": 0.3}), stream=stream
            )
    assert caught.value.reason == "timeout" and caught.value.transient


async def test_stream_that_stalls_midway_times_out(fake: FakeAnthropic, transport: str) -> None:
    fake.always(Reply.answer(stall_s=5.0))
    async with new_client(transport, fake.url, max_retries=0, timeout=60.0) as c:
        with pytest.raises(LLMError) as caught:
            await generate(
                c, QUESTION, [], PASSAGES, CONFIG.model_copy(update={"timeout_s": 0.3}), stream=True
            )
    assert caught.value.reason == "timeout" and caught.value.transient


async def test_connection_refused(transport: str) -> None:
    async with new_client(transport, f"http://127.0.0.1:{free_port()}", max_retries=0) as c:
        with pytest.raises(LLMError) as caught:
            await generate(c, QUESTION, [], PASSAGES, CONFIG)
    assert caught.value.reason == "connection error" and caught.value.transient


# --- streaming into a sink (issue 14) ----------------------------------------------------------------------
class RecordingSink:
    """What a live answer receives: the "writing" signal and every text delta, with when it arrived."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.deltas: list[str] = []
        self.at: list[float] = []
        self.writing_calls = 0
        self.stop_after = stop_after

    async def writing(self) -> None:
        self.writing_calls += 1

    async def text(self, delta: str) -> None:
        if self.stop_after is not None and len(self.deltas) >= self.stop_after:
            raise StreamStopped("stopped by the test")
        self.deltas.append(delta)
        self.at.append(time.monotonic())

    @property
    def text_so_far(self) -> str:
        return "".join(self.deltas)


async def test_a_cited_answer_is_streamed_token_by_token_as_it_will_read(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.answer(cite=[1, 0], tokens_per_s=200))
    sink = RecordingSink()
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, sink=sink)
    assert fake.requests[0].stream is True
    assert sink.writing_calls == 1
    assert len(sink.deltas) > 10  # word by word, not the whole answer at once
    assert sink.text_so_far == result.text  # markers included, exactly what is recorded
    assert "[1]" in sink.text_so_far and "[2]" in sink.text_so_far
    assert sink.text_so_far.index("Request leave") < sink.text_so_far.index("[1]")
    assert sink.at[0] < sink.at[-1]  # the first words arrived before the last were written


async def test_markers_go_between_a_cited_block_and_its_trailing_space(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.answer(segments=[("  You get 25 days.  ", 0), ("\nRequest it in Workday. ", 1),
                                       ("That is all.\n\n", None)]))
    sink = RecordingSink()
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, sink=sink)
    assert sink.text_so_far == result.text == "You get 25 days. [1]  \nRequest it in Workday. [2] That is all."


async def test_a_not_found_answer_is_never_streamed(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.not_found("**NOT_FOUND** The documents do not say."))
    sink = RecordingSink()
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, sink=sink)
    assert result.not_found and sink.deltas == []


async def test_an_answer_starting_like_the_token_is_streamed_once_it_differs(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.plain("NOT all employees get the same leave."))
    sink = RecordingSink()
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, sink=sink)
    assert not result.not_found and sink.text_so_far == result.text


async def test_a_stream_failing_midway_raises_after_the_text_so_far(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.answer(cite=[0, 1], fail_after_tokens=6), Reply.answer(cite=[0, 1], fail_after_tokens=6))
    sink = RecordingSink()
    with pytest.raises(LLMError) as caught:
        await generate(client, QUESTION, [], PASSAGES, CONFIG, sink=sink)
    assert caught.value.transient
    assert sink.deltas and "[1]" not in sink.text_so_far  # part of the answer had been handed on


async def test_a_sink_can_stop_the_answer_midway(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.answer(cite=[0, 1], tokens_per_s=500))
    sink = RecordingSink(stop_after=3)
    with pytest.raises(StreamStopped):
        await generate(client, QUESTION, [], PASSAGES, CONFIG, sink=sink)
    assert len(sink.deltas) == 3


# --- the stream's edge cases (issue 16: the events are read by bot.llm, not the SDK) ------------------------
live_modes = pytest.mark.parametrize("live", [False, True], ids=["stream", "sink"])


async def _generate(client: AsyncAnthropic, live: bool) -> tuple[object, RecordingSink]:
    sink = RecordingSink()
    result = await generate(client, QUESTION, [], PASSAGES, CONFIG, stream=True, sink=sink if live else None)
    return result, sink


@pytest.mark.parametrize(
    "framing",
    [{"unknown_events": True}, {"crlf": True}, {"split_events": True}],
    ids=["pings-and-unknown-events", "crlf", "events-split-across-reads"],
)
@live_modes
async def test_the_framing_of_the_stream_does_not_change_the_answer(
    fake: FakeAnthropic, client, framing: dict[str, bool], live: bool
) -> None:
    usage = {"input_tokens": 900, "cache_read_input_tokens": 700, "cache_creation_input_tokens": 0}
    fake.script(Reply.answer(cite=[1, 0], usage=usage), Reply.answer(cite=[1, 0], usage=usage, **framing))
    plain = await generate(client, QUESTION, [], PASSAGES, CONFIG)
    result, sink = await _generate(client, live)
    assert result == plain
    assert [s.heading for s in plain.sources] == ["Requesting time off", "Annual leave"]
    if live:
        assert sink.text_so_far == plain.text and len(sink.deltas) > 10


@pytest.mark.parametrize(
    ("error_type", "reason", "transient"),
    [("overloaded_error", "overloaded", True), ("api_error", "server error", True),
     ("brand_new_error", "malformed response", True)],
    ids=["overloaded", "api_error", "unknown-type"],
)
@live_modes
async def test_an_error_event_midway_is_classified_and_not_retried(
    fake: FakeAnthropic, client, error_type: str, reason: str, transient: bool, live: bool
) -> None:
    fake.always(Reply.answer(fail_after_tokens=4, fail_error_type=error_type))
    with pytest.raises(LLMError) as caught:
        await _generate(client, live)
    assert (caught.value.reason, caught.value.transient) == (reason, transient)
    assert len(fake.requests) == 1  # the response had started: the SDK does not retry it


@live_modes
async def test_a_stream_that_ends_before_message_stop_is_an_error(fake: FakeAnthropic, client, live: bool) -> None:
    fake.always(Reply.answer(end_after_tokens=5))  # a complete HTTP response, but half an answer
    with pytest.raises(LLMError) as caught:
        await _generate(client, live)
    assert caught.value.reason == "incomplete stream" and caught.value.transient
    assert len(fake.requests) == 1


@live_modes
async def test_a_connection_dropped_midway_is_a_connection_error(fake: FakeAnthropic, client, live: bool) -> None:
    fake.always(Reply.answer(drop_after_tokens=5))
    with pytest.raises(LLMError) as caught:
        await _generate(client, live)
    assert caught.value.reason == "connection error" and caught.value.transient


async def test_an_answer_after_a_failed_stream_reuses_the_client(fake: FakeAnthropic, client) -> None:
    fake.script(Reply.answer(drop_after_tokens=3), Reply.answer(end_after_tokens=3))
    for _ in range(2):
        with pytest.raises(LLMError):
            await _generate(client, True)
    result, sink = await _generate(client, True)
    assert sink.text_so_far == result.text and result.sources
