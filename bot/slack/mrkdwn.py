"""Markdown (what the model and the admin commands write) → Slack's mrkdwn.

mrkdwn is not Markdown: bold is ``*x*``, italic ``_x_``, strike ``~x~``, links ``<url|text>``, there are no
headings, tables or nested lists, and ``&``, ``<`` and ``>`` must be escaped everywhere except in the link
syntax itself. Code spans and fences pass through (escaped, otherwise untouched).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,3})[.)]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]]+)\]\((\S+?)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x01"


def escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs require."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_link_text(text: str) -> str:
    """Text inside ``<url|text>``: also no ``|``, which would end the URL part early."""
    return escape(text).replace("|", "¦")


def inline(text: str) -> str:
    """Inline Markdown of one line → mrkdwn."""
    saved: list[str] = []

    def keep(rendered: str) -> str:
        saved.append(rendered)
        return f"\x00{len(saved) - 1}\x00"

    text = _CODE_SPAN.sub(lambda m: keep(f"`{escape(m.group(2).strip())}`"), text)
    text = _LINK.sub(lambda m: keep(_link(m.group(2), m.group(1))), text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{m.group(1)}>"), text)
    text = escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _PLACEHOLDER.sub(lambda m: saved[int(m.group(1))], text)


def _link(url: str, label: str) -> str:
    if not re.match(r"^(https?|mailto):", url):
        return escape(label)  # a relative link means nothing in Slack: keep its words
    return f"<{url}|{escape_link_text(label)}>"


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
    lines = markdown.replace("\r\n", "\n").split("\n")
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


def split_text(text: str, limit: int = 3000) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at paragraph, then line, then word boundaries (never inside
    a ``<link|text>``); a code fence cut in two is closed and reopened so both halves render as code."""
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
        while cut > 0 and line[:cut].count("<") > line[:cut].count(">"):
            cut = line.rfind(" ", 0, cut)
        if cut <= 0:
            cut = budget
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
