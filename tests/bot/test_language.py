"""Which language a question is in (knowledge.language), and the wordings per language (bot.status_text)."""

from __future__ import annotations

import dataclasses

import pytest

from bot.core.types import Status
from knowledge.language import LANGUAGES, clean, detect_language
from bot.status_text import (
    DEFAULT_MAINTENANCE_MESSAGE,
    ENGLISH_WORDING,
    REASON_CIRCUIT_OPEN,
    REASON_NO_KEY,
    REASON_REQUEST_FAILED,
    REASON_RETRIEVAL_ONLY,
    REASON_UNAVAILABLE,
    WORDINGS,
    answer_body,
    answer_language,
    fallback_label,
    fallback_status_label,
    maintenance_text,
    reason_text,
    request_failed,
    status_label,
    unavailable,
    wording,
)

DETECTION = [
    # English, including the short, technical and empty messages chat is full of
    ("How many vacation days do I get?", "en"),
    ("vpn not working", "en"),
    ("How do I reset my password?", "en"),
    ("Can I bring my dog to the office?", "en"),
    ("my VPN keeps disconnecting, any ideas?", "en"),
    ("Where do I find the Confluence page for SSO?", "en"),
    ("how to submit expenses in Concur", "en"),
    ("parental leave in Germany", "en"),
    ("Hola team, how do I reset my password?", "en"),
    ("ok?", "en"),
    ("ok", "en"),
    ("thanks", "en"),
    ("hi", "en"),
    ("?", "en"),
    ("wifi password", "en"),
    ("per diem", "en"),
    ("Okta MFA reset", "en"),
    ("👍", "en"),
    ("", "en"),
    ("   ", "en"),
    ("https://intranet.example.com/hr", "en"),
    ("<@U0123ABC>", "en"),
    # German
    ("Wie viele Urlaubstage habe ich?", "de"),
    ("VPN geht nicht", "de"),
    ("Wie setze ich mein Passwort zurück?", "de"),
    ("Reisekosten abrechnen", "de"),
    ("Mein VPN bricht ständig ab, hat jemand eine Idee?", "de"),
    ("<@U0123ABC> Wo finde ich die Elternzeit-Regelung?", "de"),
    ("Wie viel Urlaub habe ich in Portugal? https://intranet.example.com/hr/urlaub", "de"),
    # Spanish
    ("¿Cuántos días de vacaciones tengo?", "es"),
    ("¿Cómo restablezco mi contraseña?", "es"),
    ("política de gastos de viaje", "es"),
    ("Mi VPN se desconecta todo el tiempo, ¿alguna idea?", "es"),
    # French
    ("Combien de jours de congé ai-je ?", "fr"),
    ("le VPN ne marche pas", "fr"),
    ("Comment réinitialiser mon mot de passe ?", "fr"),
    ("note de frais", "fr"),
    # Portuguese
    ("Quantos dias de férias eu tenho?", "pt"),
    ("a VPN não funciona", "pt"),
    ("Como redefinir minha senha?", "pt"),
    # Italian
    ("Quanti giorni di ferie ho?", "it"),
    ("la VPN non funziona", "it"),
    ("Come reimposto la mia password?", "it"),
    # Dutch
    ("Hoeveel vakantiedagen heb ik?", "nl"),
    ("VPN werkt niet", "nl"),
    ("Hoe reset ik mijn wachtwoord?", "nl"),
    # Chinese (by script: ideographs, no kana)
    ("我有多少天年假？", "zh"),
    ("VPN连不上", "zh"),
    ("报销", "zh"),
    ("如何重置密码？", "zh"),
    # Japanese (by script: any kana)
    ("有給休暇は何日ありますか？", "ja"),
    ("VPNがつながらない", "ja"),
    ("パスワードをリセットするには？", "ja"),
    # languages without a wording get English
    ("Сколько у меня дней отпуска?", "en"),
    ("휴가가 며칠 있나요?", "en"),
    ("Hur många semesterdagar har jag?", "en"),
    ("Ile mam dni urlopu?", "en"),
    ("Quants dies de vacances tinc?", "en"),
    # mostly English with a foreign word: English
    ("How do I say 休暇 in an email to HR?", "en"),
]


@pytest.mark.parametrize(("text", "expected"), DETECTION, ids=[f"{e}:{t[:30]}" for t, e in DETECTION])
def test_detects_the_language_and_defaults_to_english_when_unsure(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_every_detected_language_has_a_wording() -> None:
    assert {language for _, language in DETECTION} <= set(LANGUAGES)
    assert set(LANGUAGES) == set(WORDINGS), "knowledge.language and bot.status_text know the same languages"
    assert {"de", "es", "fr", "zh", "ja", "pt", "it", "nl"} <= set(WORDINGS)


def test_chat_noise_is_removed_before_detection() -> None:
    assert clean("<@U0123> see <https://x.example|the page> `kubectl get pods` :tada: VPN 401k und mehr") \
        == "see und mehr"


# --- the wordings -------------------------------------------------------------------------------------------
TRANSLATED = [w for w in WORDINGS.values() if w.language != "en"]
REASONS = (REASON_NO_KEY, REASON_RETRIEVAL_ONLY, REASON_CIRCUIT_OPEN, REASON_UNAVAILABLE, REASON_REQUEST_FAILED)


@pytest.mark.parametrize("words", TRANSLATED, ids=lambda w: w.language)
def test_each_translation_is_complete_and_differs_from_english(words) -> None:  # type: ignore[no-untyped-def]
    for field in dataclasses.fields(words):
        value, english = getattr(words, field.name), getattr(ENGLISH_WORDING, field.name)
        if field.name in ("language", "reasons", "open", "close", "stop"):
            continue
        if field.name.endswith("_label"):
            assert value.icon == english.icon and value.title and value.detail
            assert (value.title, value.detail) != (english.title, english.detail), field.name
        else:
            assert value and value != english, field.name
    assert set(words.reasons) == set(REASONS), "every reason is worded"
    assert len(set(words.reasons.values())) == len(REASONS)


def test_english_wording_is_unchanged() -> None:
    assert fallback_label(REASON_NO_KEY) == "_Automatic excerpt — not written by the AI model (no API key configured)._"
    assert fallback_status_label(REASON_NO_KEY).text == (
        "Automatic excerpt — quoted from the sources, not written by the AI model (no API key configured).")
    assert fallback_status_label(None).detail == "quoted from the sources, not written by the AI model."
    reason = unavailable("overloaded (529)")
    assert reason == "the AI model is unavailable: overloaded (529)"
    assert reason_text(reason) == reason, "English shows the recorded reason, technical detail included"
    assert request_failed("unexpected error") == "the AI model request failed: unexpected error"
    assert ENGLISH_WORDING.not_found == "I couldn't find this in the handbook or the other documents I can search."
    assert ENGLISH_WORDING.closest_sources == "These are the closest sources I found; they may still help:"
    assert maintenance_text(DEFAULT_MAINTENANCE_MESSAGE) == DEFAULT_MAINTENANCE_MESSAGE
    not_found = status_label(Status.NOT_FOUND)
    assert not_found is not None and not_found.text == "Not found in the handbook — nothing here answers this, so I won't guess."


def test_reasons_are_worded_without_their_technical_detail() -> None:
    assert reason_text(REASON_NO_KEY, "de") == "kein API-Schlüssel konfiguriert"
    assert reason_text(REASON_RETRIEVAL_ONLY, "es") == "las respuestas de IA están desactivadas"
    assert reason_text(REASON_CIRCUIT_OPEN, "ja") == "AI モデルが一時的に利用できません"
    assert reason_text(unavailable("overloaded (529)"), "de") == "das KI-Modell ist nicht erreichbar"
    assert reason_text(request_failed("authentication failed (401)"), "fr") == "la requête au modèle d'IA a échoué"
    assert reason_text("a reason added later", "nl") == "a reason added later", "untranslated: shown as recorded"
    assert reason_text(REASON_NO_KEY, "ko") == REASON_NO_KEY, "a language without a wording gets English"
    assert wording("ko") is ENGLISH_WORDING and wording(None) is ENGLISH_WORDING


def test_cjk_labels_use_their_own_punctuation() -> None:
    assert fallback_status_label(REASON_NO_KEY, "zh").text == "自动摘录 — 逐字引自资料来源，并非由 AI 模型撰写（未配置 API 密钥）。"
    assert fallback_label(REASON_NO_KEY, "ja") == "_自動抜粋 — AI モデルが書いた文章ではありません（API キーが設定されていません）。_"


@pytest.mark.parametrize("words", list(WORDINGS.values()), ids=lambda w: w.language)
def test_an_answer_tells_its_language_and_its_label_is_not_shown_twice(words) -> None:  # type: ignore[no-untyped-def]
    language = words.language
    excerpt = f"{fallback_label(REASON_NO_KEY, language)}\n\n> Full-time employees receive 25 days. [1]"
    assert answer_language(excerpt) == language
    assert answer_body(excerpt, fallback=True, fallback_reason=REASON_NO_KEY) == \
        "> Full-time employees receive 25 days. [1]"
    assert answer_language(f"{words.not_found}\n\n{words.closest_sources}") == language
    assert answer_language(words.maintenance_message) == language
    label = status_label(Status.ANSWERED, fallback=True, fallback_reason=REASON_NO_KEY, language=language)
    assert label is not None and label.title == words.excerpt_title and label.warning
    assert status_label(Status.NOT_FOUND, language=language) == words.not_found_label
    assert status_label(Status.MAINTENANCE, language=language) == words.maintenance_label
    assert status_label(Status.ANSWERED, language=language) is None


def test_a_model_answer_or_a_custom_maintenance_message_is_english_wording() -> None:
    assert answer_language("Sie haben 25 Urlaubstage [1].") == "en", "a model answer has no label to word"
    assert maintenance_text("Wartung bis 14 Uhr.", "de") == "Wartung bis 14 Uhr.", "an operator's own message"
    assert maintenance_text(DEFAULT_MAINTENANCE_MESSAGE, "de").startswith("Deskmate ist wegen Wartungsarbeiten")
