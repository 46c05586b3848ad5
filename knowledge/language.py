"""The language a question is written in, detected offline: for wording Deskmate's own replies in it, and for
searching a question that is not in the documents' language with the cross-lingual embedder.

Two questions are asked of a message:

- :func:`written_in` — is it in the documents' language? Retrieval (:mod:`knowledge.retrieval`) searches a
  message that confidently is not with the index's cross-lingual vectors, and the worker asks the rewrite model
  for an English query. Any of the model's 139 languages counts, and a non-Latin script settles it.
- :func:`detect_language` — which of Deskmate's reply languages is it in? Only what Deskmate words itself (the
  extractive fallback's label, the "not found" reply, the maintenance reply: ``bot.status_text``) needs this;
  the model is told to reply in the question's language by its prompt.

:func:`detect_language` returns one of :data:`LANGUAGES` and **English whenever it is unsure**: a false
"German" on an English question is worse than an English reply to a German one (that is what everybody got
before). How:

1. chat noise is removed first: Slack ``<…>`` tokens (mentions, links), URLs, e-mail addresses, inline code,
   ``:emoji:`` codes, digits and all-caps acronyms ("VPN", "SSO" say nothing about the language);
2. Japanese and Chinese by script: any kana → Japanese; otherwise CJK ideographs that outweigh the Latin words
   → Chinese (Simplified wording; a kanji-only Japanese phrase such as 経費精算 reads as Chinese too);
3. everything else by `py3langid <https://github.com/adbar/py3langid>`_ (BSD-3-Clause; a naive Bayes model over
   byte n-grams of 139 languages, shipped inside the package, ~4.6 MB wheel, pure Python + numpy): the best of
   all 139 languages must be one Deskmate words replies in (a Polish or Russian question gets English), with at
   least :data:`MIN_PROBABILITY` of the probability over all languages and :data:`MIN_SHARE` of it among
   Deskmate's languages. Very short messages ("ok?", "thanks", "wifi password") fall below and get English.

The model is loaded once per process on first use (about 0.5–1.5 s and ~100 MB; the worker loads it while it
starts, :func:`warm_up`); a detection then takes well under a millisecond.

Example::

    >>> detect_language("Wie viele Urlaubstage habe ich?")
    'de'
    >>> detect_language("ok?")
    'en'
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from py3langid.langid import MODEL_FILE, LanguageIdentifier

ENGLISH = "en"
#: The languages Deskmate words its own replies in (ISO 639-1); bot.status_text has a wording for each.
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "fr", "pt", "it", "nl", "zh", "ja")
#: Languages told apart by the model (Latin script); Chinese and Japanese are told by their script.
_MODEL_LANGUAGES = ("en", "de", "es", "fr", "pt", "it", "nl")

#: The best language's probability over all of the model's languages must reach this…
MIN_PROBABILITY = 0.2
#: …and its share of the probability of Deskmate's own languages this (else: unsure → English).
MIN_SHARE = 0.6
#: Text longer than this is cut before detection (a question's first lines say its language).
MAX_CHARS = 1000

_NOISE = re.compile(
    r"<[@#!][^>\n]*>|<(?:https?|mailto):[^>\n]*>"  # Slack: <@U123>, <#C1|general>, <!here>, <https://…|label>
    r"|https?://\S+|www\.\S+"
    r"|\S+@\S+\.\S+"  # e-mail addresses
    r"|```.*?```|`[^`\n]*`"  # code
    r"|:[a-z0-9_+-]+:"  # :emoji: codes
    r"|\b[A-Z0-9]{2,}[a-z]?\b"  # acronyms and codes: VPN, SSO, MFA, 401k, PTO
    r"|\d+",
    re.DOTALL,
)
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")  # hiragana, katakana (and half-width)
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ɏ]{2,}")

_identifier: Any = None
_lock = threading.Lock()


def _model() -> Any:
    """py3langid's identifier over all its languages, loaded once (thread-safe; classifying is read-only)."""
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def warm_up() -> None:
    """Load the model now (the worker does, while it starts) rather than on the first reply that needs it."""
    _model()


def clean(text: str) -> str:
    """The question's words without chat noise (mentions, links, code, emoji codes, acronyms, digits)."""
    return re.sub(r"\s+", " ", _NOISE.sub(" ", text[:MAX_CHARS])).strip()


def detect_language(text: str) -> str:
    """The language of ``text`` among :data:`LANGUAGES`; English when unsure or another language."""
    words = clean(text)
    if not words:
        return ENGLISH
    if _KANA.search(words):
        return "ja"
    han = len(_HAN.findall(words))
    if han and han >= len(_LATIN_WORD.findall(words)):
        return "zh"
    ranking: list[tuple[str, float]] = _model().rank(words)
    best, probability = ranking[0]
    if best not in _MODEL_LANGUAGES or best == ENGLISH:
        return ENGLISH
    own = sum(p for language, p in ranking if language in _MODEL_LANGUAGES)
    if probability < MIN_PROBABILITY or (own and probability / own < MIN_SHARE):
        return ENGLISH
    return str(best)


# --- is a message in the documents' language? ---------------------------------------------------------------
#: Letters of scripts other than Latin (Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai, Hangul, kana, Han …).
_NON_LATIN = re.compile(r"[\u0370-\u03ff\u0400-\u052f\u0590-\u06ff\u0900-\u0dff\u0e00-\u0e7f\u1100-\u11ff"
                        r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN_SCRIPT_LANGUAGES = frozenset(("en", "de", "es", "fr", "pt", "it", "nl", "da", "sv", "no", "fi", "pl", "cs",
                                     "sk", "hu", "ro", "hr", "sl", "et", "lv", "lt", "tr", "id", "ms", "vi"))
#: Languages a colleague may write in: the model also knows English-based creoles (Nigerian Pidgin) and small
#: languages that short English chat often resembles more than English itself ("how do i boil an egg" → pcm).
_WORKPLACE_LANGUAGES = _LATIN_SCRIPT_LANGUAGES | {"ru", "uk", "bg", "el", "ar", "he", "fa", "hi", "bn", "th", "zh",
                                                  "ja", "ko"}


@functools.lru_cache(maxsize=4096)  # the pipeline and the search ask it of the same message
def written_in(text: str, language: str) -> bool:
    """Is ``text`` written in ``language`` (ISO 639-1, the documents' language)? False only when it confidently
    is not: mostly letters of another script, or — among the languages colleagues write in — the model's best
    guess is another language, with at least :data:`MIN_PROBABILITY` of the probability over all its languages
    and :data:`MIN_SHARE` of the workplace languages'. Unsure (very short messages, product names, code) → True.

    >>> written_in("Wie viele Urlaubstage habe ich?", "en"), written_in("wifi password", "en")
    (False, True)
    """
    language = language.lower()
    words = clean(text)
    if not words:
        return True
    if language in _LATIN_SCRIPT_LANGUAGES:
        if len(_NON_LATIN.findall(words)) > len(_LATIN_WORD.findall(words)):
            return False
    elif language in ("zh", "ja"):
        return bool(_HAN.search(words) or _KANA.search(words))
    ranking = [(lang, p) for lang, p in _model().rank(words) if lang in _WORKPLACE_LANGUAGES]
    if not ranking:
        return True
    best, probability = ranking[0]
    total = sum(p for _, p in ranking)
    return bool(best == language or probability < MIN_PROBABILITY or probability / total < MIN_SHARE)
