"""The extractive fallback: when the model can't be used, quote the passages' most relevant sentences.

The reply is clearly labelled as an automatic excerpt, quotes whole sentences verbatim (Markdown noise
stripped) and cites each quote with the same ``[n]`` markers and numbered sources as a model answer, so the
renderers need nothing special for it. The label (and its reason) is worded in the asker's language
(:mod:`knowledge.language`, :mod:`bot.status_text`); the quotes are the documents' own words, whatever their language.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bot.core.types import Source
from knowledge.language import detect_language
from bot.status_text import fallback_label, wording
from knowledge.passage import Passage

#: Passages looked at for sentences (retrieval rank order).
MAX_PASSAGES = 3
MAX_SENTENCES = 4
MAX_CHARS = 700
#: A sentence shorter than this is usually a fragment ("See below.") and ranks lower.
MIN_SENTENCE_CHARS = 25

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just me more most my no nor not now
    of off on once only or other our ours out over own same she should so some such than that the their
    theirs them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours get got need want please tell know let
    us can't cannot don't doesn't i'm i've anyone someone something thing things also may might must
    shall much many
    """.split()  # noqa: SIM905 - a word block reads better than a 150-item list
)

_ABBREVIATIONS = (
    "e.g.",
    "i.e.",
    "etc.",
    "approx.",
    "incl.",
    "vs.",
    "no.",
    "mr.",
    "ms.",
    "mrs.",
    "dr.",
    "st.",
)

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")


@dataclass
class _Quote:
    number: int
    text: str
    last_position: int


@dataclass
class _Sentence:
    passage_rank: int
    position: int
    text: str
    overlap: float = 0.0
    score: float = 0.0


def stem(word: str) -> str:
    """A deliberately small stemmer: enough to match leave/leaves, request/requesting, policy/policies."""
    word = word.replace("’", "'")
    word = word.removesuffix("'s")
    for suffix, replacement in (
        ("ies", "y"),
        ("ied", "y"),
        ("sses", "ss"),
        ("ing", ""),
        ("ed", ""),
        ("es", ""),
        ("s", ""),
    ):
        if suffix == "s" and word.endswith(("ss", "us", "is")):
            break
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    doubled = word[-1:] == word[-2:-1] and word[-1:] not in ("l", "s", "z")  # dropp(ing) → drop
    if len(word) > 4 and (doubled or word.endswith("e")):  # leave / leav(es) → leav
        word = word[:-1]
    return word


def terms(text: str) -> set[str]:
    """Stemmed content words of ``text``."""
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def strip_markdown(text: str) -> str:
    """Plain prose from a Markdown-ish line: no emphasis, links, code ticks, images or HTML tags."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)  # images → alt text
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # links → their text
    text = re.sub(r"<[^>\n]{1,200}>", "", text)  # inline HTML tags
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    text = re.sub(r"(?<![\w_])_(?!\s)(.+?)(?<!\s)_(?![\w_])", r"\1", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"\s*\[\d+\]", "", text)  # stray citation markers would clash with ours
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage, one per list item / heading-free line group, Markdown stripped."""
    blocks: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(" ".join(paragraph))
            paragraph.clear()

    header: list[str] | None = None  # the current table's column names
    for line in text.splitlines():
        if not line.strip().startswith("|") and not _TABLE_RULE.match(line):
            header = None
        if (
            not line.strip()
            or _HEADING.match(line)
            or _TABLE_RULE.match(line)
            or line.strip().startswith("```")
        ):
            flush()
            continue
        if line.lstrip().startswith(">"):
            line = line.lstrip().lstrip(">")
        if line.strip().startswith("|"):  # a table row reads as one "sentence" of its cells
            flush()
            cells = [c.strip() for c in line.strip().strip("|").split("|") if c.strip()]
            if header is None:
                header = cells
                continue
            # each data row carries its column names, so "Portugal — Annual leave per calendar year: 25
            # working days" matches a question about annual leave and reads on its own when quoted
            named = [f"{h}: {c}" if h and h.lower() != c.lower() else c for h, c in zip(header[1:], cells[1:])]
            blocks.append(cells[0] + (" — " + "; ".join(named) if named else ""))
            continue
        if _LIST_ITEM.match(line):
            flush()
            paragraph.append(_LIST_ITEM.sub("", line))
            flush()
            continue
        paragraph.append(line.strip())
    flush()

    sentences: list[str] = []
    for block in blocks:
        block = strip_markdown(block)
        if not block:
            continue
        for piece in _split_block(block):
            piece = piece.strip()
            if piece:
                sentences.append(piece)
    return sentences


def _split_block(block: str) -> list[str]:
    pieces = _SENTENCE_END.split(block)
    # re-join splits that happened after an abbreviation ("e.g. Workday")
    merged: list[str] = []
    for piece in pieces:
        if merged and merged[-1].lower().endswith(_ABBREVIATIONS):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def _shorten(sentence: str, limit: int) -> str:
    """A sentence cut at a word boundary to ``limit`` characters, marked with an ellipsis."""
    if len(sentence) <= limit:
        return sentence
    cut = sentence[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—-")
    return f"{cut}…"


_NUMBER = re.compile(r"\d")
_QUANTITY_QUESTION = re.compile(r"\b(how (many|much|long|often|far|soon|late|early)|when|what time|which date|deadline)\b", re.I)


def _score(sentences: list[_Sentence], query: set[str], passage_terms: list[set[str]],
           wants_number: bool = False) -> None:
    """Query-term overlap, weighted by rarity among the candidates (a term in every sentence tells little),
    for the sentence and for its whole passage, plus a little for retrieval rank."""
    sentence_terms = [terms(s.text) for s in sentences]
    n = len(sentences)
    idf = {t: math.log(1 + n / (1 + sum(t in words for words in sentence_terms))) for t in query}
    total = sum(idf.values()) or 1.0

    def overlap(words: set[str]) -> float:
        return sum(idf[t] for t in query & words) / total

    for s, words in zip(sentences, sentence_terms, strict=True):
        s.overlap = overlap(words)
        s.score = (
            s.overlap
            + 0.3 * overlap(passage_terms[s.passage_rank])  # a sentence in a passage on the topic
            + 0.1 / (1 + s.passage_rank)  # earlier passages were ranked more relevant
            + (0.03 if s.position == 0 else 0.0)  # a passage's first sentence tends to state its point
            - (0.1 if len(s.text) < MIN_SENTENCE_CHARS else 0.0)
            + (0.15 if wants_number and _NUMBER.search(s.text) else 0.0)  # "how many days": quote the figure
        )


def pick_sentences(question: str, passages: list[Passage]) -> list[_Sentence]:
    """The sentences to quote, in reading order (passage rank, then position)."""
    query = terms(question)
    candidates = [
        _Sentence(rank, pos, text)
        for rank, passage in enumerate(passages[:MAX_PASSAGES])
        for pos, text in enumerate(split_sentences(passage.text))
    ]
    if not candidates:
        return []
    _score(candidates, query, [terms(p.text) for p in passages[:MAX_PASSAGES]],
           wants_number=bool(_QUANTITY_QUESTION.search(question)))
    ranked = sorted(candidates, key=lambda s: (-s.score, s.passage_rank, s.position))
    best = ranked[0].score
    relevant = [s for s in ranked if s.overlap > 0 and s.score >= 0.4 * best]
    if not relevant:  # no word in common: the top passage's opening is still retrieval's best guess
        relevant = sorted(candidates, key=lambda s: (s.passage_rank, s.position))[:1]

    chosen: list[_Sentence] = []
    used = 0
    for s in relevant:
        if len(chosen) >= MAX_SENTENCES:
            break
        if not chosen and len(s.text) > MAX_CHARS:
            s.text = _shorten(s.text, MAX_CHARS)
        if used + len(s.text) > MAX_CHARS:
            continue
        chosen.append(s)
        used += len(s.text)
    return sorted(chosen, key=lambda s: (s.passage_rank, s.position))


def extractive_answer(question: str, passages: list[Passage], reason: str,
                      language: str | None = None) -> tuple[str, list[Source]]:
    """A labelled answer quoting the passages' best sentences, each quote followed by its ``[n]`` marker.

    The label is worded in ``language`` (default: the question's, :func:`knowledge.language.detect_language`)."""
    language = language or detect_language(question)
    label = fallback_label(reason, language)
    chosen = pick_sentences(question, passages)
    if not chosen:
        return f"{label}\n\n{wording(language).no_quote}", []

    numbers: dict[int, int] = {}
    sources: list[Source] = []
    quotes: list[_Quote] = []  # chosen sentences of one passage form one quote
    for s in chosen:
        if s.passage_rank not in numbers:
            passage = passages[s.passage_rank]
            numbers[s.passage_rank] = len(numbers) + 1
            sources.append(
                Source(
                    number=numbers[s.passage_rank],
                    doc_id=passage.doc_id,
                    title=passage.title,
                    location=passage.location,
                    heading=passage.heading,
                )
            )
        number = numbers[s.passage_rank]
        if quotes and quotes[-1].number == number:
            joiner = " " if s.position == quotes[-1].last_position + 1 else " … "
            quotes[-1].text += joiner + s.text
            quotes[-1].last_position = s.position
        else:
            quotes.append(_Quote(number, s.text, s.position))

    for source in sources:
        source.quote = next(q.text for q in quotes if q.number == source.number)
    body = "\n\n".join(f"> {q.text} [{q.number}]" for q in quotes)
    return f"{label}\n\n{body}", sources
