"""Answer → Block Kit (the body in a ``markdown`` block), and Markdown → mrkdwn (no Slack, no stack)."""

from __future__ import annotations

from bot.core.types import Answer, Source, Status
from slack_sdk.models.blocks import Block, MarkdownBlock

from bot.slack.mrkdwn import markdown_for_block, markdown_to_mrkdwn, split_text
from bot.slack.rendering import feedback_modal, render_answer, render_answer_parts, render_markdown, render_notice
from tests.bot.slack.control_sequences import control_sequences

SOURCES = [Source(number=1, doc_id="travel/per-diem", title="Per diem", heading="Meals",
                  location="https://handbook.northwind.example/travel/per-diem"),
           Source(number=2, doc_id="it/vpn", title="VPN", heading="VPN", location="it/vpn.md")]


def test_markdown_becomes_mrkdwn() -> None:
    md = ("# Travel\n\n**Bold** and *italic* and __also bold__ and ~~gone~~, `a <b>`, "
          "[the handbook](https://example.com/a?b=1&c=2) & more <stuff>\n\n- one\n  - nested\n1. first\n"
          "> quoted\n\n```python\nif a < b:\n    pass\n```")
    out = markdown_to_mrkdwn(md)
    assert out.startswith("*Travel*")
    assert "*Bold* and _italic_ and *also bold* and ~gone~" in out
    assert "`a &lt;b&gt;`" in out
    assert "<https://example.com/a?b=1&amp;c=2|the handbook> &amp; more &lt;stuff&gt;" in out, \
        "& in a URL is written &amp;, as Slack writes it"
    assert "• one\n    • nested\n1. first\n> quoted" in out
    assert "```\nif a &lt; b:\n    pass\n```" in out
    assert control_sequences(out) == []


def test_tables_become_preformatted() -> None:
    out = markdown_to_mrkdwn("| Severity | Page |\n|---|---|\n| **SEV1** | yes |\n| SEV4 | no |")
    assert out.splitlines() == ["```", "Severity  Page", "SEV1      yes", "SEV4      no", "```"]


def test_answer_with_sources_and_buttons() -> None:
    message = render_answer(Answer(interaction_id=7, text="Meals are **€40** a day [1].", sources=SOURCES),
                            ask_a_human=True)
    blocks = message["blocks"]
    assert blocks[0] == {"type": "markdown", "text": "Meals are **€40** a day [1]."}, "standard Markdown"
    parsed = Block.parse(blocks[0])
    assert isinstance(parsed, MarkdownBlock) and parsed.to_dict() == blocks[0], "what slack_sdk builds"
    sources = blocks[1]["elements"][0]["text"]
    assert "<https://handbook.northwind.example/travel/per-diem|[1] Per diem › Meals>" in sources
    assert "[2] VPN — it/vpn.md" in sources, "a source without a URL is shown, not linked"
    actions = blocks[2]
    assert [e["action_id"] for e in actions["elements"]] == ["deskmate_vote_up", "deskmate_vote_down",
                                                             "deskmate_escalate"]
    assert {e["value"] for e in actions["elements"]} == {"7"}
    assert message["text"] == "Meals are *€40* a day [1].", "the notification text stays mrkdwn"
    assert control_sequences(message) == []


def test_labels_for_fallback_not_found_and_maintenance() -> None:
    fallback = render_answer(Answer(interaction_id=1, fallback=True, fallback_reason="no API key configured",
                                    text="_Automatic excerpt — not written by the AI model (no API key configured)._"
                                         "\n\n> Meals are €40 [1]", sources=SOURCES[:1]))
    assert "Automatic excerpt" in fallback["blocks"][0]["elements"][0]["text"]
    assert fallback["blocks"][1] == {"type": "markdown", "text": "> Meals are €40 [1]"}, "the label not twice"
    not_found = render_answer(Answer(interaction_id=2, status=Status.NOT_FOUND, text="I couldn't find this."))
    assert "Not found" in not_found["blocks"][0]["elements"][0]["text"]
    assert not_found["blocks"][-1]["type"] == "actions"
    paused = render_answer(Answer(interaction_id=3, status=Status.MAINTENANCE, text="Paused."))
    assert "paused" in paused["blocks"][0]["elements"][0]["text"]
    assert all(b["type"] != "actions" for b in paused["blocks"]), "nothing to rate on a maintenance reply"
    assert control_sequences([fallback, not_found, paused]) == []


def test_long_answers_are_split_into_sections_within_slacks_limits() -> None:
    paragraph = "word " * 500  # 2,500 characters
    text = "\n\n".join(f"{paragraph}[{i}]" for i in range(80)) + "\n\n```\n" + "code line\n" * 600 + "```"
    message = render_answer(Answer(interaction_id=1, text=text, sources=SOURCES), ask_a_human=True)
    blocks = message["blocks"]
    assert len(blocks) == 50
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(s) <= 3000 for s in sections)
    assert "cut here" in sections[-1]
    assert blocks[-1]["type"] == "actions" and blocks[-2]["type"] == "context", "sources and buttons survive"
    assert len(message["text"]) <= 3000
    assert control_sequences(message) == []


def test_split_keeps_code_fences_balanced_and_links_whole() -> None:
    code = "```\n" + "\n".join(f"line {i} " + "x" * 60 for i in range(100)) + "\n```"
    pieces = split_text(code, 3000)
    assert len(pieces) > 1 and all(p.count("```") == 2 for p in pieces) and all(len(p) <= 3000 for p in pieces)
    line = " ".join(["<https://example.com/a|a link with words>"] * 200)
    for piece in split_text(line, 3000):
        assert piece.count("<") == piece.count(">") and len(piece) <= 3000


def test_admin_markdown_and_modal() -> None:
    message = render_markdown("**Status**\n\n- release `initial`")
    assert message["blocks"][0]["text"]["text"] == "*Status*\n\n• release `initial`"
    modal = feedback_modal(5, channel="C1", message_ts="1.2")
    assert modal["type"] == "modal" and len(modal["title"]["text"]) <= 24
    assert [b.get("block_id") for b in modal["blocks"]][1:] == ["reason", "comment"]
    assert all(b.get("optional") for b in modal["blocks"][1:])
    assert control_sequences([message, modal]) == []


def test_a_document_echoed_inside_a_link_cannot_notify_the_channel() -> None:
    """The reported case: a document containing <!channel>, echoed by the model inside a link, was posted as
    ``<https://example.com/a<!channel>|…>``."""
    hostile = Source(number=1, doc_id="d", title="Policy <!here>", heading="<@U123>",
                     location="https://example.com/p<!everyone>", quote="<!channel>")
    message = render_answer(Answer(interaction_id=9, sources=[hostile],
                                   text="See [the policy](https://example.com/a<!channel>) [1]."), ask_a_human=True)
    assert control_sequences(message) == [], message
    assert "[the policy](https://example.com/a%3C!channel%3E)" in message["blocks"][0]["text"]
    sources = message["blocks"][1]["elements"][0]["text"]
    assert "<https://example.com/p%3C!everyone%3E|[1] Policy &lt;!here&gt; › &lt;@U123&gt;>" in sources
    notice = render_notice("Failed: <!channel>")
    assert notice["text"] == "Failed: &lt;!channel&gt;" and control_sequences(notice) == []


def test_markdown_blocks_keep_markdown_and_escape_outside_text() -> None:
    md = ("# Travel\n\n**Bold**, `a <b>`, [the handbook](https://example.com/a?b=1&c=2) & <!channel> <@U123>\n\n"
          "- one\n  - nested\n> quoted <!here>\n\n| A | B |\n|---|---|\n| 1 | 2 |\n\n```\nif a < b:\n```")
    out = markdown_for_block(md)
    assert out.startswith("# Travel\n\n**Bold**, `a &lt;b&gt;`"), "headings, bold and code stay Markdown"
    assert "[the handbook](https://example.com/a?b=1&amp;c=2) &amp; &lt;!channel&gt; &lt;@U123&gt;" in out
    assert "- one\n  - nested\n> quoted &lt;!here&gt;" in out and "| A | B |\n|---|---|" in out
    assert "```\nif a &lt; b:\n```" in out
    assert control_sequences(out) == []


def test_a_markdown_link_cannot_show_one_address_and_go_to_another() -> None:
    out = markdown_for_block("[https://handbook.example/pay](https://evil.example/x) [www.bank.example](https://evil"
                             ".example/y) [pay here](javascript:alert(1)) [ok](https://handbook.example/pay#a) "
                             "[x](https://a.example/p)(more) <https://auto.example/z>")
    assert "[https://evil.example/x](https://evil.example/x)" in out, "a URL as the label: the real target shown"
    assert "[https://evil.example/y](https://evil.example/y)" in out
    assert "](javascript" not in out and "[pay here]" not in out and " pay here" in out, "no javascript: link"
    assert "[ok](https://handbook.example/pay#a)" in out
    assert "[x](https://a.example/p)(more)" in out and "[https://auto.example/z](https://auto.example/z)" in out


def test_answers_over_one_messages_markdown_are_parts_each_with_one_markdown_block() -> None:
    text = "\n\n".join(f"Paragraph {n}. " + "Receipts are needed <!here>. " * 40 for n in range(30))
    parts = render_answer_parts(Answer(interaction_id=4, text=text, sources=SOURCES), ask_a_human=True)
    assert len(parts) >= 3
    for part in parts:
        markdown = [b for b in part["blocks"] if b["type"] == "markdown"]
        assert len(markdown) == 1 and 0 < len(markdown[0]["text"]) <= 12_000
        assert control_sequences(part) == [] and len(part["text"]) <= 3000
    assert parts[-1]["blocks"][-1]["type"] == "actions"
    everything = "".join(b["text"] for p in parts for b in p["blocks"] if b["type"] == "markdown")
    assert [n for n in range(30) if f"Paragraph {n}." not in everything] == []
