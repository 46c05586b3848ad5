"""Is a message in the documents' language (knowledge.language.written_in)? Retrieval searches one that confidently
is not with the cross-lingual vectors, and the worker asks the rewrite model for a query in the documents'
language. (Which reply language a question gets: tests/bot/test_language.py.)"""

from __future__ import annotations

import pytest

from knowledge.language import written_in


@pytest.mark.parametrize("text, english", [
    ("how do I reset my password", True),
    ("VPN?", True),
    ("how do i boil an egg", True),  # py3langid's best guess is Nigerian Pidgin: not a workplace language
    ("no funciona la vpn", False),
    ("Wie kann ich das VPN nutzen", False),
    ("comment réinitialiser mon mot de passe", False),
    ("Quantos dias de férias tenho?", False),
    ("Jak złożyć wniosek urlopowy?", False),
    ("Как оформить отпуск?", False),
    ("VPN 连不上", False),
])
def test_written_in_english(text: str, english: bool) -> None:
    assert written_in(text, "en") is english


def test_written_in_german_documents() -> None:
    assert written_in("Wie kann ich das VPN nutzen", "de") is True
    assert written_in("how do I reset my password on the laptop", "de") is False
