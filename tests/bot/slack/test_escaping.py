"""Nothing Deskmate posts to Slack carries a control sequence it did not write itself (``<!channel>``,
``<!here>``, ``<!everyone>``, ``<!subteam^…>``, ``<@U…>``, ``<#C…>``, ``<!date…>``) — whatever the question,
the model's answer or the documents contain. A property over a table of adversarial inputs, through every path
outside text takes into a message (no Slack, no stack); the end-to-end checks through the fake Slack API are in
``test_events.py``, ``test_actions.py`` and ``test_commands.py``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import bot.slack
from bot.core.types import Answer, Source, Status
from bot.slack.mrkdwn import (
    channel_mention,
    escape,
    link,
    markdown_for_block,
    markdown_to_mrkdwn,
    safe_url,
    split_text,
    truncate,
    user_mention,
)
from bot.slack.rendering import render_answer, render_markdown, render_notice, source_line
from tests.bot.slack.control_sequences import control_sequences, control_sequences_in_text, visible_text

#: Text from outside that tries to smuggle a control sequence in. Each was posted raw by at least one path.
NASTY = [
    "<!channel>", "<!here>", "<!everyone>", "<!subteam^S0123ABC|@support>", "<!here|here>",
    "<@U0123ABC>", "<@W123|bob>", "<#C0123ABC>", "<#C0123|general>", "<!date^1392734382^{date_short}|Feb 18>",
    # already escaped: must stay text, never be un-escaped into the real thing
    "&lt;!here&gt;", "&amp;lt;!channel&amp;gt;", "&#60;!everyone&#62;", "&lt;@U0123ABC&gt;",
    # Markdown links: the control sequence in the URL, in the label, in both, nested links, bad schemes
    "[the form](https://example.com/a<!channel>)", "[<!channel>](https://example.com/a)",
    "[x](https://example.com/a|<!here>)", "[x](https://a<!here>|<!channel>)", "[x](<!channel>)",
    "[x](javascript:alert(1)) <!here>", "[x](slack://channel?team=T1&id=C1)", "[x](HTTPS://EXAMPLE.COM/<@U1>)",
    "[[inner](https://b.example)](https://c.example)", "[`<!here>`](https://c.example)",
    "[a **<!channel>** b](https://c.example)", "![image <!here>](https://c.example/i.png)",
    '[x](https://example.com/a "title <!here>")', "[x](mailto:a@example.com?subject=<!everyone>)",
    # autolinks and Slack-syntax links written by the model or a document
    "<https://example.com/a<!channel>>", "<https://example.com|<!here>>", "<https://example.com/a|label>",
    "<mailto:a@example.com|<!everyone>>", "<https://example.com/a b>", "<<!here>>", "<https://a.example<@U1>>",
    "https://example.com/<!here> bare", "<javascript:alert(1)|click>",
    # code, emphasis, block constructs
    "`<!here>`", "``<!channel> ` <!here>``", "```\n<!channel>\n<@U123>\n```", "```\nunclosed <!here>",
    "# <!channel> heading", "## [x](https://a<!here>) heading", "> <@U123> quoted", "> [q](https://a<!here>)",
    "- <!here> bullet\n  - [n](https://a<!channel>)", "1. <!everyone>", "---\n<!here>",
    "| <!here> | [x](https://a<!channel>) |\n|---|---|\n| <@U1> | `<#C1>` |",
    "**<!channel>**", "*<!here>*", "_<!here>_", "~~<!here>~~", "__<!everyone>__",
    # broken pieces and the converter's own markers
    "<", ">", "&", "<!channel", "!channel>", "< !here >", "<\u200b!channel>", "\x00<!here>\x01",
    "\x000\x00 [x](https://a.example) \x001\x00", "[x](https://a.example/\u202e<!here>)", "a\r\n<!here>\r\nb",
    # long enough to be split and cut
    "word " * 700 + "<!channel> [x](https://example.com/" + "a" * 50 + "<!here>)",
    "[" + "a <!here> " * 400 + "](https://example.com/long)",
    "&" * 3100 + "<!here>", "<!here>" * 600,
]
IDS = [repr(n[:40]) for n in NASTY]

SLACK_IDS = ["U0123ABC", "W123", "C0123ABC", "G0PRIVATE", "D0DIRECT"]


def sources_from(nasty: str) -> list[Source]:
    return [Source(number=1, doc_id="a", title=nasty, heading=nasty, location=nasty, quote=nasty),
            Source(number=2, doc_id="b", title=nasty, heading="h", location=f"https://example.com/{nasty}",
                   quote=nasty),
            Source(number=3, doc_id="c", title="t", heading=nasty, location=f"HTTP://example.com|{nasty}"),
            Source(number=4, doc_id="d", title=nasty, location="/srv/knowledge/handbook/x.md")]


def answers_from(nasty: str) -> list[Answer]:
    return [Answer(interaction_id=1, text=nasty, sources=sources_from(nasty)),
            Answer(interaction_id=2, text=nasty, status=Status.NOT_FOUND),
            Answer(interaction_id=3, text=f"_Automatic excerpt — not written by the AI model ({nasty})._\n\n> {nasty} [1]",
                   fallback=True, fallback_reason=nasty, sources=sources_from(nasty)),
            Answer(interaction_id=None, text=nasty, status=Status.MAINTENANCE),
            Answer(interaction_id=5, text=nasty, status=Status.ERROR)]


@pytest.mark.parametrize("nasty", NASTY, ids=IDS)
def test_no_path_lets_a_control_sequence_through(nasty: str) -> None:
    for answer in answers_from(nasty):
        for ask_a_human in (False, True):
            message = render_answer(answer, ask_a_human=ask_a_human)
            assert control_sequences(message) == [], (answer.status, message)
    for source in sources_from(nasty):
        assert control_sequences_in_text(source_line(source)) == [], source
    mrkdwn = markdown_to_mrkdwn(nasty)
    assert control_sequences_in_text(mrkdwn) == [], mrkdwn
    for piece in split_text(mrkdwn, 3000):
        assert control_sequences_in_text(piece) == [], piece
    for limit in (5, 17, 100, 999):
        assert control_sequences_in_text(truncate(mrkdwn, limit)) == []
    assert control_sequences(render_markdown(nasty)) == []
    assert control_sequences_in_text(markdown_for_block(nasty)) == [], markdown_for_block(nasty)
    assert control_sequences(render_notice(nasty)) == []
    assert control_sequences_in_text(escape(nasty)) == []
    for url in (nasty, f"https://example.com/{nasty}", f"mailto:a@example.com?subject={nasty}", "https://a.example"):
        assert control_sequences_in_text(link(url, nasty)) == [], url
        assert control_sequences_in_text(link(url)) == [], url
    assert control_sequences_in_text(user_mention(nasty)) == []
    assert control_sequences_in_text(channel_mention(nasty)) == []


@pytest.mark.parametrize("nasty", NASTY, ids=IDS)
def test_escaped_text_reads_exactly_as_written(nasty: str) -> None:
    """Escaping hides nothing: the reader sees the text as it was typed, entities included."""
    assert visible_text(escape(nasty)) == nasty
    assert "<" not in escape(nasty) and ">" not in escape(nasty)


def test_already_escaped_forms_are_escaped_again_never_unescaped() -> None:
    assert escape("&lt;!here&gt;") == "&amp;lt;!here&amp;gt;"
    assert markdown_to_mrkdwn("say &lt;!here&gt; & &amp;") == "say &amp;lt;!here&amp;gt; &amp; &amp;amp;"
    assert visible_text(markdown_to_mrkdwn("&lt;!channel&gt;")) == "&lt;!channel&gt;"


def test_links_are_made_safe_in_both_parts() -> None:
    assert markdown_to_mrkdwn("[the form](https://example.com/a<!channel>)") == \
        "<https://example.com/a%3C!channel%3E|the form>", "the URL cannot close the link or open another"
    assert markdown_to_mrkdwn("[<!channel> | x](https://example.com/a)") == \
        "<https://example.com/a|&lt;!channel&gt; ¦ x>", "the label is escaped; a | cannot end the URL part"
    assert markdown_to_mrkdwn("[x](https://example.com/a|<!here>)") == "<https://example.com/a%7C%3C!here%3E|x>"
    assert markdown_to_mrkdwn("[x](https://example.com/?a=1&b=2)") == "<https://example.com/?a=1&amp;b=2|x>"
    assert markdown_to_mrkdwn("<https://example.com/a?b=1&c=2>") == "<https://example.com/a?b=1&amp;c=2>"
    assert markdown_to_mrkdwn("<https://example.com/a<!channel>>") == \
        "&lt;https://example.com/a&lt;!channel&gt;&gt;", "not an autolink: text"
    assert markdown_to_mrkdwn("[[inner](https://b.example)](https://c.example)") == "<https://c.example|inner>"
    assert markdown_to_mrkdwn("[`<!here>`](https://c.example)") == "<https://c.example|&lt;!here&gt;>"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "slack://channel?id=C1", "data:text/html,x", "/relative",
                                 "handbook/travel.md", "ftp://example.com/x", "https://", "http:///path",
                                 "mailto:<!channel>", " ", "<!here>"])
def test_only_http_and_mailto_urls_become_links(url: str) -> None:
    assert safe_url(url) is None
    assert link(url, "label <b>") == "label &lt;b&gt;"
    assert "<" not in markdown_to_mrkdwn(f"[x]({url})")


def test_mentions_deskmate_writes_itself_are_validated() -> None:
    for good in SLACK_IDS:
        expected = f"<@{good}>" if good[0] in "UW" else f"<#{good}>"
        assert (user_mention(good) if good[0] in "UW" else channel_mention(good)) == expected
    assert user_mention("U1>|<!channel") == "@U1&gt;|&lt;!channel"
    assert channel_mention("support") == "#support" and channel_mention("#support") == "#support"
    assert channel_mention("C1><!here") == "#C1&gt;&lt;!here"


def test_cuts_never_split_a_link_or_an_entity() -> None:
    text = "see " + "<https://example.com/a|a link> &amp; " * 100
    for limit in range(1, 200):
        cut = truncate(text, limit)
        assert len(cut) <= limit
        assert control_sequences_in_text(cut) == [] and not cut.rstrip("…").endswith(("&", "&am", "&amp"))
    for piece in split_text("x" * 2995 + " &amp; <https://example.com|link text here>", 3000):
        assert control_sequences_in_text(piece) == []


def test_the_scanner_finds_what_it_must() -> None:
    """The helper itself: each of these would reach Slack as a control sequence."""
    for bad in ["<!channel>", "<https://a<!here>|x>", "<@U1>", "<#C1|x>", "<!subteam^S1>", "x <", "<https://a b|x>",
                "<https://example.com|<!here>>", "<javascript:alert(1)|x>"]:
        assert control_sequences({"text": "ok", "blocks": [{"type": "section", "text": {"text": bad}}]}), bad
    assert control_sequences({"text": "<@U1> asked <#C1>"}, own={"<@U1>", "<#C1>"}) == []
    assert control_sequences({"text": "&lt;!here&gt; <https://a.example/?a=1&amp;b=2|x> <mailto:a@b.example>"}) == []


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """String literals (and the literal parts of f-strings) of a module, without docstrings and regexes."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "compile":
            skip.update(id(arg) for arg in node.args)  # re.compile: reading Slack's syntax, not writing it
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


#: ``<`` opening something Slack would parse: ``<@``, ``<#``, ``<!``, ``<https:``, ``<word>``, or ``<`` right
#: before an f-string's ``{…}`` (``f"<{url}|…>"``). (``a < b`` in a Lua script is not a message.)
_OPENS_SLACK_SYNTAX = re.compile(r"<(?=[\w@#!^]|$)")


def test_only_the_mrkdwn_module_writes_slacks_angle_brackets() -> None:
    """``<…>`` in a message is written by bot/slack/mrkdwn.py (escape, link, the mentions) and nowhere else in
    the Slack adapter: anything else building ``<`` by hand is how raw text used to get through."""
    package = Path(bot.slack.__file__).parent
    offenders = [f"{path.name}:{line}: {value!r}" for path in sorted(package.rglob("*.py"))
                 if path.name != "mrkdwn.py" for line, value in _string_literals(path)
                 if _OPENS_SLACK_SYNTAX.search(value)]
    assert offenders == []
