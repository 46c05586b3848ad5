"""The search query for a message of a conversation, built without a model: deterministic and explainable.

In a chat thread people ask follow-ups that mean little on their own — "and if that doesn't help?" after "vpn
not working". Searched alone, such a message finds nothing relevant. :func:`offline_query` decides whether the
message is a follow-up and, if it is, carries the previous question's topic (and the last answer's most
specific words) into the query. The worker
uses it whenever the model cannot rewrite the query (no API key, the circuit open, retrieval-only mode, the
rewrite call failing, or a release with ``query_rewrite="offline"``); ``deskmate eval retrieval`` builds its
queries with it too, so what is measured is what the worker searches.

**Content words** are the message's words (2+ letters or digits, as BM25 tokenizes) minus English function
words (:data:`FUNCTION_WORDS`: articles, pronouns, auxiliaries, question words, prepositions, chat filler).

**A follow-up** is a message of at most :data:`MAX_ELLIPTICAL_WORDS` content words, not announcing a new topic
("unrelated —", "different question:", "separate q:"… :data:`TOPIC_CHANGES`), for which one of these holds (the
first that applies is the recorded reason):

1. it opens like one: "and…", "and if…", "what about…", "how about…", "what if…", "same for…", "also…",
   "but…", "or…", "then…" (:data:`OPENERS`);
2. it has no content word at all ("why?", "and then?");
3. none of its content words is in the index's vocabulary (when a vocabulary is given): "hmm, weird";
4. it is short: one content word ("vacation?");
5. it points back: a pronoun (it, that, this, they, them, those, these, there…) and at most
   :data:`POINTING_MAX_WORDS` content words ("can I install it on my phone?").

Anything else is **self-contained** and searched as written, so a change of topic ("how do I request parental
leave?" after a VPN question) carries nothing. Yet rules cannot tell every follow-up ("does all this waiting
around count as work time?" after a cancelled flight): in a thread, a self-contained message also gets an
``alternative`` — the message with the conversation's words carried as if it were a follow-up — and retrieval
searches both and merges the two rankings (:meth:`knowledge.retrieval.Retriever.search`). A real change of
topic keeps its own best passages near the top; a missed follow-up gains its conversation's. A message that
announces a new topic gets no alternative.

**What is carried** into a follow-up's query, after the message:

- the content words of the previous user question *as it was resolved* (each earlier user turn is resolved the
  same way, oldest first, so a chain of follow-ups keeps its topic), minus those the message already has
  (compared by stem), at most :data:`MAX_CARRIED`;
- the :data:`ANSWER_WORDS` most specific words of the last answer: those the fewest chunks of the index contain
  (a follow-up is most often about the page just quoted, and an answer names its topic in the documents' own
  words — "NorthGate", "Fleetwatch" — where the question said "vpn").

Measured on ``bench/data/followups.jsonl`` in docs/retrieval.md ("Follow-up questions").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from knowledge.index import stem_words

#: A message with more content words than this is self-contained, whatever it begins with.
MAX_ELLIPTICAL_WORDS = 5
#: A message with a pronoun pointing back is a follow-up up to this many content words.
POINTING_MAX_WORDS = 3
#: Words carried from the conversation into the query, at most.
MAX_CARRIED = 8
#: Content words kept as a resolved question's topic (its own first, then what it carried).
MAX_CONTEXT = 12
#: Words of the last answer added to a follow-up's query, at most: those the fewest chunks contain.
ANSWER_WORDS = 4

_WORD = re.compile(r"(?u)\b\w\w+\b")  # BM25's tokens (bm25s, like scikit-learn's CountVectorizer)
_MARKER = re.compile(r"\[\d+\]")  # an answer's citation markers
_LEADING = re.compile(r"^[\W_]+")

#: English words that carry no topic: articles, pronouns, auxiliaries and their contractions' stems,
#: question words, prepositions, conjunctions, quantifiers and chat filler.
FUNCTION_WORDS: frozenset[str] = frozenset("""
a an the this that these those it its itself they them their theirs there here he him his she her hers we us our
ours you your yours yourself me my mine myself i one ones someone something anything anyone everyone everything
nothing nobody somebody anybody else same such other another former latter
is am are was were be been being do does did doing done have has had having will would shall should can could may
might must ought get gets got getting let lets
doesn don didn isn aren wasn weren won wouldn shouldn couldn can cannot haven hasn hadn ll re ve
what which who whom whose when where why how whether if then than so and or but nor also too either neither not
no yes yeah yep nope ok okay hi hello hey thanks thank please pls plz hmm um uh oh ah well just really actually
still again already yet ever even only very much many more most some any all each every both few lot lots
of in on at to for from by with about into onto over under between through during before after above below up
down out off against without within along across around near per via like as
need needs want wants know tell help mean means thing things way case
doesnt dont didnt isnt arent wasnt werent cant wont wouldnt shouldnt couldnt havent hasnt im ive id youre thats
whats hows wheres theres tho though although btw lol pls thx ya gonna wanna gotta kinda
say says said happen happens happened go goes going went come comes take takes took put give gives keep find
found see look try tried use using used stuff anyway instead maybe probably usually always never sometimes often
now right away soon later till until since ago long next last
""".split())

#: How a follow-up opens (lower-case, whole words; the longest match is reported).
OPENERS: tuple[str, ...] = (
    "and if", "and what", "and how", "and when", "and where", "and who", "and why", "and", "what about",
    "how about", "what if", "what else", "anything else", "same for", "same with", "same question", "same thing",
    "also", "but", "or", "then", "plus", "ok and", "okay and", "ok so", "ok what", "okay what", "except",
)

#: Phrases that say the message starts a new topic (it is then self-contained, whatever else it looks like).
TOPIC_CHANGES: tuple[str, ...] = (
    "unrelated", "different question", "different topic", "another question", "new question", "new topic",
    "separate question", "separate q", "totally separate", "something else", "other topic", "off topic",
    "changing the subject", "change of topic", "switching gears", "on another note",
)
_TOPIC_CHANGE = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in TOPIC_CHANGES) + r")\b")

#: Words that point back to something said before.
POINTING: frozenset[str] = frozenset(
    "it its that this these those they them their there one ones same such he him she her".split())


class HistoryTurn(Protocol):
    """One earlier message of the conversation (``role``: "user" or "assistant")."""

    @property
    def role(self) -> str: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class ChatTurn:
    """A plain :class:`HistoryTurn` (the evaluation reads these from JSONL)."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class SearchQuery:
    """The query to search for one message, and why it is what it is."""

    text: str  # what is searched
    message: str  # the message as written (whitespace normalised)
    carried: tuple[str, ...] = ()  # words taken from the conversation
    reason: str = "self-contained"  # why words were (or were not) carried
    #: Also to search (and merge), for a self-contained message in a thread: it with the conversation's words.
    alternative: str | None = None

    @property
    def follow_up(self) -> bool:
        return bool(self.carried)


def normalise(text: str) -> str:
    return " ".join(text.split())


def content_words(text: str) -> list[str]:
    """The message's topic words, lower-cased, in order, each once."""
    seen: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word not in FUNCTION_WORDS and word not in seen:
            seen.append(word)
    return seen


def opener(text: str) -> str | None:
    """The follow-up opener the message starts with ("and if", "what about"…), if any."""
    words = _LEADING.sub("", text.lower()).replace("’", "'").split()
    head = " ".join(w.strip(",.!?;:") for w in words[:3])
    found = [o for o in OPENERS if head == o or head.startswith(o + " ")]
    return max(found, key=len) if found else None


def follow_up_reason(message: str, vocabulary: Mapping[str, int] | None = None) -> str | None:
    """Why ``message`` needs the conversation to be searched (a sentence for the trace), or None when it is
    self-contained. See the module's docstring for the rules."""
    words = content_words(message)
    if len(words) > MAX_ELLIPTICAL_WORDS or _TOPIC_CHANGE.search(message.lower().replace("’", "'")):
        return None
    opening = opener(message)
    if opening is not None:
        return f"opens with {opening!r}"
    if not words:
        return "no content word"
    if vocabulary is not None and not any(s in vocabulary for s in stem_words(words)):
        return "no content word in the index"
    if len(words) == 1:
        return "one content word"
    pointing = [w for w in _WORD.findall(message.lower()) if w in POINTING]
    if pointing and len(words) <= POINTING_MAX_WORDS:
        return f"points back ({pointing[0]!r})"
    return None


def offline_query(message: str, history: Sequence[HistoryTurn], *, vocabulary: Mapping[str, int] | None = None,
                  max_carried: int = MAX_CARRIED, answer_words: int = ANSWER_WORDS) -> SearchQuery:
    """The query to search for ``message`` after ``history`` (oldest first): the message itself when it is
    self-contained, else the message followed by the previous question's topic words and the most specific
    words of the last answer.

    ``vocabulary``: the index's terms (stems) and how many chunks contain each
    (:meth:`knowledge.retrieval.Retriever.vocabulary`); without it no answer word is carried (which are the
    specific ones cannot be told)."""
    context: list[str] = []
    last_answer = ""
    for turn in history:
        if turn.role == "user" and normalise(turn.text):
            resolved = _resolve(normalise(turn.text), context, "", vocabulary, max_carried, 0)
            context = (content_words(resolved.message) + list(resolved.carried))[:MAX_CONTEXT]
            last_answer = ""
        elif turn.role == "assistant":
            last_answer = turn.text
    return _resolve(normalise(message), context, last_answer, vocabulary, max_carried, answer_words)


def _resolve(message: str, context: list[str], answer: str, vocabulary: Mapping[str, int] | None,
             max_carried: int, answer_words: int) -> SearchQuery:
    reason = follow_up_reason(message, vocabulary)
    if reason is None:
        if not context or _TOPIC_CHANGE.search(message.lower().replace("’", "'")):
            return SearchQuery(text=message, message=message)
        carried = _carried(message, context, answer, vocabulary, max_carried, answer_words)
        return SearchQuery(text=message, message=message,
                           alternative=f"{message} {' '.join(carried)}" if carried else None,
                           reason="self-contained; also searched with the conversation's words" if carried
                           else "self-contained")
    if not context:
        return SearchQuery(text=message, message=message, reason=f"{reason}; no earlier question to carry from")
    carried = _carried(message, context, answer, vocabulary, max_carried, answer_words)
    if not carried:
        return SearchQuery(text=message, message=message, reason=f"{reason}; nothing new to carry")
    text = f"{message} {' '.join(carried)}".strip()
    return SearchQuery(text=text, message=message, carried=tuple(carried), reason=reason)


def _carried(message: str, context: list[str], answer: str, vocabulary: Mapping[str, int] | None,
             max_carried: int, answer_words: int) -> list[str]:
    """The conversation's words to add to ``message``: the earlier question's topic, then the last answer's most
    specific words, none that the message already has (by stem)."""
    have = set(stem_words(content_words(message)))
    carried: list[str] = []
    for word, stem in zip(context, stem_words(context)):
        if stem not in have and len(carried) < max_carried:
            carried.append(word)
            have.add(stem)
    return carried + _specific_words(answer, have, vocabulary, answer_words)


def _specific_words(answer: str, have: set[str], vocabulary: Mapping[str, int] | None, limit: int) -> list[str]:
    """Up to ``limit`` words of ``answer`` that the index has, the fewest chunks first (the answer's topic, not
    its phrasing), skipping stems in ``have`` (which it extends) and numbers (amounts and phone numbers are
    rare in an index, yet say little about the topic)."""
    if vocabulary is None or limit <= 0 or not answer:
        return []
    words = content_words(_MARKER.sub(" ", answer))
    ranked = sorted(((vocabulary[stem], position, word, stem)
                     for position, (word, stem) in enumerate(zip(words, stem_words(words)))
                     if stem not in have and vocabulary.get(stem, 0) > 0 and not any(c.isdigit() for c in word)))
    chosen: list[str] = []
    for _, _, word, stem in ranked:
        if stem not in have and len(chosen) < limit:
            chosen.append(word)
            have.add(stem)
    return chosen
