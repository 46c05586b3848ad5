"""Heading-aware chunking: a document becomes passages that never cross a heading and remember their path.

A chunk's ``heading`` is the path of headings above it (``Travel › Per diem › Meals``), which is what an
answer cites. Long sections are split at paragraph boundaries into pieces of about ``target_words`` with a
small overlap; a paragraph longer than the target is split at sentence boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADING_SEPARATOR = " › "
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[*_`])")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    heading: str  # heading path below the title, may be ""
    text: str  # the body, as shown to users

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_id}#{self.index}"


def _clean_heading(text: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # [label](link) -> label
    text = re.sub(r"[*_`]+", "", text)
    text = re.sub(r"\{#[^}]*\}", "", text)  # {#anchor}
    return " ".join(text.split())


def sections(text: str, title: str) -> list[tuple[str, str]]:
    """Split Markdown into (heading path, body) in document order. The title heading is not repeated."""
    stack: list[tuple[int, str]] = []
    out: list[tuple[str, list[str]]] = [("", [])]
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            level, name = len(match.group(1)), _clean_heading(match.group(2))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, name))
            names = [n for _, n in stack]
            if names and names[0].strip().lower() == title.strip().lower():
                names = names[1:]
            out.append((HEADING_SEPARATOR.join(names), []))
        else:
            out[-1][1].append(line)
    return [(heading, "\n".join(lines).strip()) for heading, lines in out if "\n".join(lines).strip()]


def _words(text: str) -> int:
    return len(text.split())


def _split_long_paragraph(paragraph: str, target: int) -> list[str]:
    sentences = _SENTENCE_END.split(paragraph)
    pieces: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        if current and _words(" ".join(current)) + _words(sentence) > target:
            pieces.append(" ".join(current))
            current = []
        if _words(sentence) > target * 2:  # no sentence boundaries (a table, a code block): hard split
            words = sentence.split()
            for i in range(0, len(words), target):
                pieces.append(" ".join(words[i : i + target]))
            continue
        current.append(sentence)
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_body(body: str, target_words: int, overlap_words: int) -> list[str]:
    """Pack paragraphs into pieces of about ``target_words``; consecutive pieces share ~``overlap_words``."""
    paragraphs: list[str] = []
    for para in re.split(r"\n\s*\n", body):
        para = para.strip()
        if not para:
            continue
        paragraphs.extend(_split_long_paragraph(para, target_words) if _words(para) > target_words else [para])
    pieces: list[str] = []
    current: list[str] = []
    for para in paragraphs:
        if current and _words("\n\n".join(current)) + _words(para) > target_words:
            pieces.append("\n\n".join(current))
            tail = current[-1]
            current = [tail] if overlap_words and _words(tail) <= overlap_words else []
        current.append(para)
    if current:
        piece = "\n\n".join(current)
        if not pieces or piece != pieces[-1]:
            pieces.append(piece)
    return pieces


def chunk_document(doc_id: str, title: str, text: str, *, target_words: int = 180, overlap_words: int = 30) -> list[Chunk]:
    chunks: list[Chunk] = []
    for heading, body in sections(text, title):
        for piece in split_body(body, target_words, overlap_words):
            chunks.append(Chunk(doc_id=doc_id, index=len(chunks), heading=heading, text=piece))
    return chunks


def indexed_text(title: str, heading: str, body: str) -> str:
    """What the retrievers see: title and heading path ahead of the body (both help BM25 and dense)."""
    head = title if not heading else f"{title}{HEADING_SEPARATOR}{heading}"
    return f"{head}\n\n{body}"
