"""An answer's Markdown as Adaptive Card elements that Teams renders.

A ``TextBlock`` renders only a subset of Markdown — bold, italic, bulleted and numbered lists, links
(https://aka.ms/ACTextFeatures); headings, tables, block quotes, code and images show as raw text. The model's
answers (and the extractive fallback's ``> quote [n]`` lines) use all of them, so the answer is parsed with
markdown-it-py (CommonMark, plus GFM tables and strikethrough; raw HTML is text) and each block becomes what
Teams can show:

====================  ===============================================================================
Markdown              Adaptive Card (schema 1.5)
====================  ===============================================================================
paragraph             ``TextBlock`` (bold, italic, links kept as TextBlock Markdown)
heading               bold ``TextBlock``: ``Large`` (h1), ``Medium`` (h2), default size (h3–h6)
list (any depth)      ``TextBlock`` of ``- item`` / ``1. item`` lines (``\\r``-separated, as Teams wants);
                      a nested list, quote or code block inside an item is indented under it
block quote           ``Container`` with style ``emphasis`` (a shaded box) around its blocks
code block            ``Container`` (``emphasis``) of ``Monospace`` TextBlocks, one per line, indentation kept
table                 ``Table`` (first row as header, column alignment kept), with a ``TextBlock``
                      ``fallback`` for clients without tables
thematic break        a separator line above the next block
image                 a link to it with its alt text
====================  ===============================================================================

Inline code is shown without its backticks (a TextBlock has no inline code style); strikethrough as plain text.
Characters that the TextBlock renderer would take as markup but that were literal in the answer (``*``,
``_`` at a word boundary, a leading ``-``/``1.``) are backslash-escaped, and a literal ``[a](b)`` gets a space
(``[a] (b)``) so that no renderer makes it a link; citations ``[n]`` are left as they are.
Link targets other than http(s) and mailto are dropped (the text stays).
"""

from __future__ import annotations

import re
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

Element = dict[str, Any]

_MD = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])

HEADING_SIZES = {"h1": "Large", "h2": "Medium"}
INDENT_PX = 16
MAX_CODE_LINES = 80  # a longer code block is cut (the card must stay small)
LIST_SEPARATOR = "\r"  # Teams: "- Item 1\r- Item 2"
NBSP = "\u00a0"

_SAFE_LINK = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~])")  # a backslash before ASCII punctuation would escape it
_ASTERISK = re.compile(r"\*")
_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # intraword underscores are not emphasis
_LINK_LIKE = re.compile(r"\](?=\()")  # "[text](" would become a link
_LEADING_BULLET = re.compile(r"^([-+])(\s)")
_LEADING_NUMBER = re.compile(r"^(\d{1,9})([.)])(\s)")
_LEADING_MARK = re.compile(r"^([#>])")


def escape(text: str) -> str:
    """Literal text for a TextBlock: what its Markdown renderer would take as markup is backslash-escaped."""
    text = _BACKSLASH.sub(r"\\\\", text)
    text = _ASTERISK.sub(r"\\*", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    return _LINK_LIKE.sub("] ", text)  # a space, not a backslash: no renderer makes "[a] (b)" a link


def _escape_line_start(text: str) -> str:
    """A block's first characters must not start a list (or a heading/quote, on renderers that know them)."""
    text = _LEADING_BULLET.sub(r"\\\1\2", text)
    text = _LEADING_NUMBER.sub(r"\1\\\2\3", text)
    return _LEADING_MARK.sub(r"\\\1", text)


def _link_target(href: str) -> str | None:
    href = href.strip()
    if not _SAFE_LINK.match(href):
        return None
    return href.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def inline(node: SyntaxTreeNode) -> str:
    """An inline node's children as TextBlock Markdown (one line: soft breaks become spaces)."""
    parts: list[str] = []
    for child in node.children:
        kind = child.type
        if kind == "text":
            parts.append(escape(child.content))
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append(" ")
        elif kind == "code_inline":
            parts.append(escape(child.content))
        elif kind in ("strong", "em"):
            inner = inline(child).strip()
            mark = "**" if kind == "strong" else "_"
            parts.append(f"{mark}{inner}{mark}" if inner else "")
        elif kind == "s":
            parts.append(inline(child))
        elif kind in ("link", "image"):
            attr = "href" if kind == "link" else "src"
            label = inline(child) or escape(str(child.attrs.get("title") or ""))
            target = _link_target(str(child.attrs.get(attr) or ""))
            if target and label:
                parts.append(f"[{label.replace('[', '(').replace(']', ')')}]({target})")
            else:
                parts.append(label)
        else:  # html_inline with html off never appears; anything unknown is shown as its text
            parts.append(escape(child.content) if child.content else inline(child))
    return "".join(parts)


def _text_block(text: str, **props: Any) -> Element:
    return {"type": "TextBlock", "text": text, "wrap": True, **props}


def _inline_of(node: SyntaxTreeNode) -> str:
    """The inline content of a paragraph / heading / table cell."""
    return "".join(inline(child) for child in node.children if child.type == "inline").strip()


def _indented(items: list[Element]) -> Element:
    return {"type": "ColumnSet", "spacing": "Small", "columns": [
        {"type": "Column", "width": f"{INDENT_PX}px", "items": []},
        {"type": "Column", "width": "stretch", "items": items},
    ]}


def _list(node: SyntaxTreeNode) -> list[Element]:
    """A list as TextBlock list lines; blocks nested in an item (lists, quotes, code…) indented under it."""
    ordered = node.type == "ordered_list"
    number = int(node.attrs.get("start") or 1) if ordered else 0
    elements: list[Element] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            elements.append(_text_block(LIST_SEPARATOR.join(lines), spacing="Small"))
            lines.clear()

    for item in node.children:
        marker = f"{number}." if ordered else "-"
        number += 1
        texts: list[str] = []
        nested: list[Element] = []
        for child in item.children:
            if child.type == "paragraph" and not nested:
                texts.append(_inline_of(child))
            else:
                nested += _block(child)
        lines.append(f"{marker} {' '.join(t for t in texts if t) or NBSP}")
        if nested:
            flush()
            elements.append(_indented(nested))
    flush()
    return elements


def _code(content: str) -> Element:
    lines = content.rstrip("\n").split("\n")
    cut = len(lines) > MAX_CODE_LINES
    lines = lines[:MAX_CODE_LINES]
    items: list[Element] = []
    for line in lines:
        stripped = line.lstrip(" \t")
        indent = len(line) - len(stripped)
        text = NBSP * (indent + line[:indent].count("\t") * 3) + escape(stripped) if stripped else NBSP
        items.append(_text_block(text, fontType="Monospace", spacing="None"))
    if cut:
        items.append(_text_block("…", fontType="Monospace", spacing="None", isSubtle=True))
    return {"type": "Container", "style": "emphasis", "items": items}


def _alignment(cell: SyntaxTreeNode) -> str | None:
    style = str(cell.attrs.get("style") or "")
    for value in ("left", "center", "right"):
        if f"text-align:{value}" in style:
            return value.capitalize()
    return None


def _table(node: SyntaxTreeNode) -> Element:
    rows = [row for section in node.children for row in section.children if row.type == "tr"]
    header = bool(node.children) and node.children[0].type == "thead"
    width = max((len(row.children) for row in rows), default=1)
    columns: list[Element] = []
    first = rows[0].children if rows else []
    for index in range(width):
        column: Element = {"width": 1}
        align = _alignment(first[index]) if index < len(first) else None
        if align:
            column["horizontalCellContentAlignment"] = align
        columns.append(column)
    table_rows: list[Element] = []
    fallback_lines: list[str] = []
    for row_index, row in enumerate(rows):
        texts = [_inline_of(cell) for cell in row.children] + [""] * (width - len(row.children))
        bold = header and row_index == 0
        table_rows.append({"type": "TableRow", "cells": [
            {"type": "TableCell", "items": [_text_block(text or NBSP, weight="Bolder") if bold
                                            else _text_block(text or NBSP)]}
            for text in texts]})
        line = " · ".join(t for t in texts if t)
        fallback_lines.append(f"**{line}**" if bold and line else line)
    return {"type": "Table", "columns": columns, "rows": table_rows, "firstRowAsHeader": header,
            "showGridLines": True, "gridStyle": "accent",
            "fallback": _text_block("\n\n".join(line for line in fallback_lines if line))}


def _block(node: SyntaxTreeNode) -> list[Element]:
    kind = node.type
    if kind == "paragraph":
        text = _escape_line_start(_inline_of(node))
        return [_text_block(text)] if text else []
    if kind == "heading":
        text = _escape_line_start(_inline_of(node))
        size = HEADING_SIZES.get(node.tag)
        props: dict[str, Any] = {"weight": "Bolder", "spacing": "Medium"}
        if size:
            props["size"] = size
        return [_text_block(text, **props)] if text else []
    if kind in ("bullet_list", "ordered_list"):
        return _list(node)
    if kind == "blockquote":
        items = [element for child in node.children for element in _block(child)]
        return [{"type": "Container", "style": "emphasis", "items": items}] if items else []
    if kind in ("fence", "code_block"):
        return [_code(node.content)]
    if kind == "table":
        return [_table(node)]
    if kind == "html_block":
        text = _escape_line_start(escape(node.content.strip()))
        return [_text_block(text)] if text else []
    return [element for child in node.children for element in _block(child)]


def markdown_elements(text: str) -> list[Element]:
    """The Adaptive Card elements for an answer's Markdown ``text`` (see the module docstring)."""
    root = SyntaxTreeNode(_MD.parse(text))
    elements: list[Element] = []
    separator = False
    for node in root.children:
        if node.type == "hr":
            separator = True
            continue
        blocks = _block(node)
        if blocks and separator:
            blocks[0]["separator"] = True
            separator = False
        elements += blocks
    return elements
