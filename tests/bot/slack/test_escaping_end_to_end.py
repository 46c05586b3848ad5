"""End to end through the real web app, worker and the fake Slack API: a question, a model answer and documents
full of Slack control sequences; every message Deskmate posts (placeholder, answer, extractive fallback,
slash-command ack, "Ask a human" in the support channel and its confirmation) is scanned as Slack receives it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.core.settings import Settings
from knowledge.passage import Passage
from tests.bot.slack.conftest import HUMAN, PUBLIC, SUPPORT, SlackClient, block_action, mention, slash_command
from tests.bot.slack.control_sequences import control_sequences, visible_text
from tests.fakes.anthropic_server import Reply
from tests.fakes.slack_api import Call, FakeSlack
from tests.stack import Stack, running_stack

#: What someone can type (Slack turns "@channel" into <!channel> in the event's text) or a model can echo.
QUESTION = "How do I book travel? <!channel> <@U0BAD> <!subteam^S0123|@ops> &lt;!here&gt; <https://a.example<!here>>"
MODEL_TEXT = ("See [the form](https://example.com/a<!channel>) and [<!here>](https://example.com/b), "
              "<https://example.com/c|<!everyone>>, ask <@U0BAD> in <#C0BAD>; `<!here>` "
              "[x](javascript:alert(1)) &lt;!channel&gt; ")


def scanned(call: Call, own: set[str] | None = None) -> Call:
    """The call, after asserting that what it posted carries no control sequence Deskmate did not write."""
    posted = {k: call.args.get(k) for k in ("text", "blocks", "attachments", "view", "markdown_text")
              if call.args.get(k)}
    assert control_sequences(posted, own or set()) == [], posted
    return call


def all_posted(slack_api: FakeSlack) -> list[Call]:
    return [c for c in slack_api.calls
            if c.method in ("chat.postMessage", "chat.update", "chat.postEphemeral", "response_url", "views.open",
                            "chat.startStream", "chat.appendStream", "chat.stopStream")]


async def test_model_answer_and_ask_a_human_carry_no_foreign_control_sequences(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply.answer(segments=[(MODEL_TEXT, None), ("Book through the travel portal.", 0)]))
    settings = slack_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url)
    async with running_stack(settings) as stack:
        slack = SlackClient(stack.client)
        await slack.event(mention(QUESTION))
        scanned(await slack_api.wait_for("chat.postMessage"))  # the placeholder
        # the model's answer is streamed into the thread (escaped as it goes), then ends with sources and buttons
        await slack_api.wait_for("chat.stopStream")
        [start] = slack_api.calls_to("chat.startStream")
        shown = visible_text(slack_api.message_text(PUBLIC, start.response["ts"]))
        assert "<!everyone>" in shown and "<@U0BAD>" in shown, "the text is shown as written, not dropped"
        assert "Book through the travel portal. [1]" in shown
        for call in slack_api.calls:
            if call.method.startswith("chat.") and call.method.endswith("Stream"):
                scanned(call)

        row = await stack.wait_final((await stack.interactions())[0].id)
        assert row.question == QUESTION
        click = block_action("deskmate_escalate", str(row.id), channel=PUBLIC, message_ts=start.response["ts"],
                             response_url=slack_api.response_url("human"))
        assert (await slack.interactive(click)).status_code == 200
        escalation = await slack_api.wait_for("chat.postMessage", channel=SUPPORT)
        scanned(escalation, own={f"<@{HUMAN}>", f"<#{PUBLIC}>"})
        assert f"<@{HUMAN}>" in escalation.args["text"] and f"<#{PUBLIC}>" in escalation.args["text"], \
            "Deskmate's own mentions stay mentions"
        assert "&lt;!channel&gt;" in escalation.args["text"], "the question's <!channel> is shown, as text"
        scanned(await slack_api.wait_for("response_url"), own={f"<#{SUPPORT}>"})
        await stack.settle()
    for call in all_posted(slack_api):
        scanned(call, own={f"<@{HUMAN}>", f"<#{PUBLIC}>", f"<#{SUPPORT}>"})


async def test_extractive_fallback_from_poisoned_documents_carries_none(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    """No API key: the answer quotes the documents, whose words, titles and locations are hostile."""
    retriever = slack_stack.worker.ctx["runtime"].retriever
    real_search = retriever.asearch

    async def poisoned(query: str, **kwargs: Any) -> list[Passage]:
        passages = await real_search(query, **kwargs)
        return [p.model_copy(update={
            "title": f"{p.title} <!channel>", "heading": "<@U0BAD> <#C0BAD>",
            "location": f"https://handbook.example/a<!here>|x{i}",
            "text": ("To book travel <!channel> use the [portal](https://a<!everyone>) and ask <@U0BAD> "
                     "or <!subteam^S0123> before you travel. " + p.text)}) for i, p in enumerate(passages)]

    retriever.asearch = poisoned
    await slack.event(mention("How do I book travel for a trip?"))
    placeholder = await slack_api.wait_for("chat.postMessage")
    answer = scanned(await slack_api.wait_for("chat.update", ts=placeholder.response["ts"]))
    assert "Automatic excerpt" in answer.text_of_blocks
    assert "<https://handbook.example/a%3C!here%3E%7Cx0|" in answer.text_of_blocks, "the source is still linked"
    await slack_stack.settle()
    for call in all_posted(slack_api):
        scanned(call)


async def test_slash_command_ack_and_answer_carry_none(slack_stack: Stack, slack: SlackClient,
                                                       slack_api: FakeSlack) -> None:
    response = await slack.command(slash_command(f"ask {QUESTION}", response_url=slack_api.response_url("cmd")))
    assert response.status_code == 200
    ack = response.json()
    assert control_sequences(ack) == [], ack
    assert "&lt;!channel&gt;" in ack["text"], "the question is echoed as text"
    scanned(await slack_api.wait_for("response_url"))
    help_response = await slack.command(slash_command("help", response_url=slack_api.response_url("help")))
    assert control_sequences(help_response.json()) == [] and "&lt;question&gt;" in help_response.json()["text"]
