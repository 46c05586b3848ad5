"""Markdown (what the model and the admin commands write) → Slack's mrkdwn, and the only way outside text gets
into a Slack message.

mrkdwn is not Markdown: bold is ``*x*``, italic ``_x_``, strike ``~x~``, links ``<url|text>``, there are no
headings, tables or nested lists. Slack reads ``<…>`` as a control sequence — a link, ``<@U…>`` (a mention),
``<#C…>``, ``<!channel>``/``<!here>``/``<!everyone>``, ``<!subteam^…>``, ``<!date…>`` — so ``&``, ``<`` and
``>`` in any text from outside (a question, the model's answer, a document's title, location or words, an
exception) must reach Slack as ``&amp;``, ``&lt;`` and ``&gt;``. The rule of this module:

- :func:`escape` is the only way outside text enters a message; :func:`link` the only way a ``<url|label>`` is
  written (both parts escaped, and only for http(s) and mailto URLs — anything else stays text);
  :func:`user_mention` / :func:`channel_mention` the only way Deskmate itself writes ``<@U…>`` / ``<#C…>``
  (from ids it validated). Nothing else in ``bot/slack`` writes ``<`` (``tests/bot/slack/test_escaping.py``);
- already-escaped text is escaped again (``&lt;!here&gt;`` → ``&amp;lt;!here&amp;gt;``, shown as typed), never
  un-escaped;
- :func:`markdown_to_mrkdwn` converts Markdown through these, code spans and fences included (escaped,
  otherwise untouched); :func:`truncate` and :func:`split_text` never cut inside ``<…>`` or ``&…;``.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,3})[.)]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\[\]]+)\]\((\S+?)(?:\s+\"[^\"]*\")?\)")  # innermost first: [[a](u)](v)
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^<>\s]+)>", re.IGNORECASE)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x01"
_INTERNAL = re.compile("[\x00\x01]")  # the converter's own markers: never taken from the input

_LINKABLE = re.compile(r"^(?:https?://[^\s/?#@]+|mailto:[^\s@]+@\S+)", re.IGNORECASE)
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_ENTITY_MAX = len("&amp;")
#: A link is one unit that is never cut (:func:`safe_cut`): bounded so that it always fits in a section.
LINK_URL_MAX = 2000
LINK_LABEL_MAX = 300  # escaped


def escape(text: str) -> str:
    """Outside text → mrkdwn text: Slack's three control characters as the entities its docs require. Apply it
    exactly once, to raw text (an entity already in the text is escaped again, so it shows as typed)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_url(url: str) -> str | None:
    """The URL part of a ``<url|label>``: only absolute http(s) and mailto URLs; characters that would end or
    split the link (``<``, ``>``, ``|``, whitespace, control and format characters) percent-encoded, ``&`` as
    ``&amp;`` (how Slack itself writes URLs in message text). None when the URL must not become a link."""
    url = url.strip()
    if not _LINKABLE.match(url):
        return None
    encoded = "".join(quote(c, safe="") if c in '<>|"' or _invisible_or_space(c) else c for c in url)
    return encoded.replace("&", "&amp;")


def _invisible_or_space(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp")


def link_label(text: str) -> str:
    """Text inside ``<url|label>``: escaped, one line, and no ``|`` (Slack would read it as the separator)."""
    return " ".join(escape(text).replace("|", "¦").split())


def link(url: str, label: str = "") -> str:
    """``<url|label>`` with both parts made safe; when ``url`` may not be a link (relative, ``javascript:``,
    ``slack://``…, or longer than ``LINK_URL_MAX``), the label (or the URL) as plain escaped text. A label
    longer than ``LINK_LABEL_MAX`` is shortened."""
    target = safe_url(url)
    if target is None or len(target) > LINK_URL_MAX:
        return escape(label or url)
    if not label.strip():
        return f"<{target}>"
    return f"<{target}|{truncate(link_label(label), LINK_LABEL_MAX)}>"


def user_mention(user_id: str) -> str:
    """Deskmate mentioning a user it knows by id (from a signed payload); anything that is not a user id is
    shown as escaped text, never as a control sequence."""
    return f"<@{user_id}>" if _USER_ID.match(user_id) else escape(f"@{user_id}")


def channel_mention(channel: str) -> str:
    """Deskmate linking a channel by id; a channel name (``#support``) or anything else is escaped text."""
    if _CHANNEL_ID.match(channel):
        return f"<#{channel}>"
    return escape(channel if channel.startswith("#") else f"#{channel}")


def _inside_token(text: str, cut: int) -> bool:
    """Would cutting ``text`` at ``cut`` split a ``<…>`` or an ``&…;`` entity?"""
    if text.rfind("<", 0, cut) > text.rfind(">", 0, cut):
        return True
    amp = text.rfind("&", max(0, cut - _ENTITY_MAX + 1), cut)
    return amp != -1 and ";" not in text[amp:cut]


def safe_cut(text: str, limit: int) -> int:
    """An index ≤ ``limit`` to cut mrkdwn at without splitting a ``<…>`` or an ``&…;`` entity (0 when the
    first token does not fit)."""
    if len(text) <= limit:
        return len(text)
    cut = limit
    opened, closed = text.rfind("<", 0, cut), text.rfind(">", 0, cut)
    if opened > closed:
        cut = opened
    amp = text.rfind("&", max(0, cut - _ENTITY_MAX + 1), cut)
    if amp != -1 and ";" not in text[amp:cut]:
        cut = amp
    return cut


def truncate(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` in at most ``limit`` characters, cut where :func:`safe_cut` allows, marked with ``ellipsis``."""
    if len(text) <= limit:
        return text
    return text[: safe_cut(text, limit - len(ellipsis))] + ellipsis


def inline(text: str) -> str:
    """Inline Markdown of one line → mrkdwn."""
    # each construct rendered now is kept aside as (mrkdwn, raw text): the raw text is what a link label
    # around it shows (a link inside a link's label, `[[a](u)](v)`, would nest `<…>`)
    saved: list[tuple[str, str]] = []

    def keep(rendered: str, raw: str) -> str:
        saved.append((rendered, raw))
        return f"\x00{len(saved) - 1}\x00"

    def raw_text(marked: str) -> str:
        return _PLACEHOLDER.sub(lambda m: saved[int(m.group(1))][1], marked)

    text = _INTERNAL.sub("", text)
    text = _CODE_SPAN.sub(lambda m: keep(f"`{escape(m.group(2).strip())}`", m.group(2).strip()), text)
    for _ in range(3):  # a link in a link's label is replaced first, then the outer one takes its words
        linked = _LINK.sub(lambda m: keep(link(raw_text(m.group(2)), raw_text(m.group(1))), raw_text(m.group(1))),
                           text)
        if linked == text:
            break
        text = linked
    text = _AUTOLINK.sub(lambda m: keep(link(m.group(1)), m.group(1)), text)
    text = escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _PLACEHOLDER.sub(lambda m: saved[int(m.group(1))][0], text)


def _table(rows: list[str]) -> list[str]:
    """A Markdown table as an aligned preformatted block (mrkdwn has no tables)."""
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows if not _TABLE_SEPARATOR.match(row)]
    if not cells:
        return []
    width = max(len(r) for r in cells)
    cells = [[re.sub(r"\*\*|__|`", "", c) for c in r] + [""] * (width - len(r)) for r in cells]
    sizes = [max(len(r[i]) for r in cells) for i in range(width)]
    lines = ["  ".join(c.ljust(sizes[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    return ["```", *(escape(line) for line in lines), "```"]


def markdown_to_mrkdwn(markdown: str) -> str:
    """Markdown → mrkdwn; every piece of text in it escaped (see the module docstring)."""
    lines = _INTERNAL.sub("", markdown).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    in_code = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_code = not in_code
            out.append("```")
            i += 1
            continue
        if in_code:
            out.append(escape(line))
            i += 1
            continue
        if _TABLE_ROW.match(line) and i + 1 < len(lines) and _TABLE_SEPARATOR.match(lines[i + 1]):
            rows = []
            while i < len(lines) and _TABLE_ROW.match(lines[i]):
                rows.append(lines[i])
                i += 1
            out.extend(_table(rows))
            continue
        out.append(_block_line(line))
        i += 1
    if in_code:
        out.append("```")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _block_line(line: str) -> str:
    if m := _HEADING.match(line):
        title = re.sub(r"\*\*|__", "", m.group(1))
        return f"*{inline(title)}*"
    if _RULE.match(line):
        return "──────────"
    if m := _BULLET.match(line):
        depth = len(m.group(1).replace("\t", "    ")) // 2
        return f"{'    ' * depth}• {inline(m.group(2))}"
    if m := _NUMBERED.match(line):
        depth = len(m.group(1).replace("\t", "    ")) // 2
        return f"{'    ' * depth}{m.group(2)}. {inline(m.group(3))}"
    if m := _QUOTE.match(line):
        return f"> {inline(m.group(1))}"
    return inline(line)


_QUOTE_MARKS = re.compile(r"^(\s{0,3}(?:>\s?)+)(.*)$")
_URL_LIKE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:|www\.|[\w-]+(?:\.[\w-]+)+(?:[/:?#]|\s*$))", re.IGNORECASE)


def _markdown_target(url: str) -> str | None:
    """A Markdown link's target for Slack's ``markdown`` block: :func:`safe_url`, and ``(``, ``)`` percent-encoded
    so the target cannot end early or swallow text."""
    target = safe_url(url)
    if target is None or len(target) > LINK_URL_MAX:
        return None
    return target.replace("(", "%28").replace(")", "%29")


def _host(url: str) -> str:
    rest = re.sub(r"^[a-z][a-z0-9+.-]*:(//)?", "", url.strip(), flags=re.IGNORECASE)
    return re.split(r"[/?#:]", rest, maxsplit=1)[0].lower().removeprefix("www.")


def markdown_link(url: str, label: str) -> str:
    """``[label](url)`` for a ``markdown`` block, like :func:`link`: only http(s)/mailto targets (anything else is
    the escaped label as text); the label escaped, on one line, without brackets; a label that reads as an address
    (``https://…``, ``www.…``, ``example.com``) shows the real target when its host differs from it — a link cannot
    say one place and go to another."""
    target = _markdown_target(url)
    if target is None:
        return escape(label or url)
    shown = label.strip()
    if not shown or (_URL_LIKE.match(shown) and _host(shown) != _host(url)):
        shown = url.strip()
    text = " ".join(escape(shown).replace("[", "(").replace("]", ")").replace("\\", "/").split())
    return f"[{truncate(text, LINK_LABEL_MAX)}]({target})"


def _inline_markdown(text: str) -> str:
    """One line of Markdown for a ``markdown`` block: code spans and links made safe, everything else escaped."""
    saved: list[str] = []

    def keep(rendered: str) -> str:
        saved.append(rendered)
        return f"\x00{len(saved) - 1}\x00"

    def raw_text(marked: str) -> str:
        return _PLACEHOLDER.sub(lambda m: _PLACEHOLDER.sub("", saved[int(m.group(1))]), marked)

    text = _CODE_SPAN.sub(lambda m: keep(f"{m.group(1)}{escape(m.group(2))}{m.group(1)}"), text)
    for _ in range(3):  # a link in a link's label: the inner one first; the outer one takes its words
        linked = _LINK.sub(lambda m: keep(markdown_link(raw_text(m.group(2)), raw_text(m.group(1)))), text)
        if linked == text:
            break
        text = linked
    text = _AUTOLINK.sub(lambda m: keep(markdown_link(m.group(1), m.group(1))), text)
    text = escape(text)
    return _PLACEHOLDER.sub(lambda m: saved[int(m.group(1))], text)


def markdown_for_block(markdown: str) -> str:
    """Markdown → the text of Slack's ``markdown`` block (standard Markdown, which Slack renders itself: headings,
    lists, tables, quotes, code). Made as safe as mrkdwn: every ``&``, ``<``, ``>`` of outside text is an entity
    (a quote's leading ``>`` stays, it cannot open a control sequence), code escaped inside its fences, and links
    only through :func:`markdown_link`."""
    lines = _INTERNAL.sub("", markdown).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    in_code = False
    for line in lines:
        if _FENCE.match(line):
            in_code = not in_code
            out.append("```")
        elif in_code:
            out.append(escape(line))
        elif m := _QUOTE_MARKS.match(line):
            out.append(m.group(1).replace(" ", "") + " " + _inline_markdown(m.group(2)))
        else:
            out.append(_inline_markdown(line))
    if in_code:
        out.append("```")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def split_text(text: str, limit: int = 3000) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at paragraph, then line, then word boundaries (never inside
    a ``<link|text>`` or an entity); a code fence cut in two is closed and reopened so both halves render as code."""
    budget = limit - 8  # room for a closing and a reopening fence
    pieces: list[str] = []
    current = ""
    for paragraph in _units(text, budget):
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate) <= budget:
            current = candidate
            continue
        if current:
            pieces.append(current)
        current = paragraph
    if current:
        pieces.append(current)
    return _balance_fences(pieces)


def _units(text: str, budget: int) -> list[str]:
    units: list[str] = []
    for paragraph in text.split("\n\n"):
        if len(paragraph) <= budget:
            units.append(paragraph)
            continue
        line_group = ""
        for line in paragraph.split("\n"):
            for part in _hard_split(line, budget):
                candidate = f"{line_group}\n{part}" if line_group else part
                if len(candidate) <= budget:
                    line_group = candidate
                else:
                    units.append(line_group)
                    line_group = part
        if line_group:
            units.append(line_group)
    return [u for u in units if u]


def _hard_split(line: str, budget: int) -> list[str]:
    parts: list[str] = []
    while len(line) > budget:
        cut = line.rfind(" ", 0, budget)
        while cut > 0 and _inside_token(line, cut):
            cut = line.rfind(" ", 0, cut)
        if cut <= 0:
            cut = safe_cut(line, budget) or budget
        parts.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    parts.append(line)
    return parts


def _balance_fences(pieces: list[str]) -> list[str]:
    balanced: list[str] = []
    open_fence = False
    for piece in pieces:
        if open_fence:
            piece = "```\n" + piece
        open_fence = piece.count("```") % 2 == 1
        if open_fence:
            piece += "\n```"
        balanced.append(piece)
    return balanced
