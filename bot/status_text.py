"""What Deskmate tells people about a question's status, worded once for every chat surface and language.

Slack (Block Kit), Teams (Adaptive Cards) and the local chat (the page and the terminal) each *format* these
texts their own way — bold, colour, escaping — but none of them words a status itself:

- :func:`status_label` — the label above an answer that is not a normal, model-written one: not found in the
  handbook, an automatic (extractive) excerpt, the maintenance reply, an error; ``None`` for a normal answer;
- :func:`answer_body` — the answer text without the extractive answer's own leading label (the surface shows
  :func:`status_label` instead, so the label is not shown twice);
- :data:`PLACEHOLDER` — the "looking it up" message shown until the worker's answer replaces it; :data:`SEARCHING`
  and :data:`WRITING` — the live status while an answer is streamed;
- :data:`FAILURE_NOTICE` — what replaces the placeholder when answering failed for good;
- :func:`progress_in`, :func:`failure_notice` — those progress messages and the failure notice in a language
  (a surface that knows the asker's language uses them; English otherwise);
- the acknowledgements of a vote and the outcomes of "Ask a human".

**Languages.** What Deskmate words itself in an *answer* — the extractive fallback's label and its reason, the
"not found" reply and its "closest sources" line, the default maintenance reply and their labels — is worded
in the asker's language (:data:`WORDINGS`, one :class:`Wording` per language of :data:`knowledge.language.LANGUAGES`;
:func:`wording` falls back to English). The answering code picks the wording from the question
(:mod:`knowledge.language`); a surface learns it back from the answer's own text (:func:`answer_language`), so a label
always matches the text under it — also for answers read back from the database, which keeps no language.
Fallback *reasons* are recorded in English (operators' reports group by them); :func:`reason_text` words them
for the label. The quoted passages themselves stay as the documents wrote them.

Example::

    label = status_label(answer.status, fallback=answer.fallback, fallback_reason=answer.fallback_reason,
                         language=answer_language(answer.text))
    if label:
        print(f"{label.icon} {label.title} — {label.detail}")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.core.settings import Settings
from bot.core.types import Answer, Status

ENGLISH = "en"


@dataclass(frozen=True)
class StatusLabel:
    """A label shown above an answer: ``<icon> <title> — <detail>`` with the title emphasised."""

    icon: str  # a Unicode emoji (Slack, Teams, browsers and terminals all show it)
    title: str
    detail: str
    warning: bool = False  # shown in a warning colour where the surface has one

    @property
    def text(self) -> str:
        """The label as one plain sentence (notifications, screen readers, the terminal)."""
        return f"{self.title} — {self.detail}"


@dataclass(frozen=True)
class Progress:
    """A short progress message with its icon."""

    icon: str
    text: str

    @property
    def with_icon(self) -> str:
        return f"{self.icon} {self.text}"


PLACEHOLDER = Progress("⏳", "Looking through the handbook…")
#: Live status while an answer is streamed (Slack's assistant-thread status, the placeholder elsewhere, Teams'
#: informative update, the local chat): retrieving, then the model writing.
SEARCHING = Progress("🔎", "Searching the handbook…")
WRITING = Progress("✍️", "Writing…")
#: Where an answer too long for one chat message goes on in the next one (Slack splits it, never cuts it).
CONTINUED_BELOW = "_(continued below)_"
CONTINUED = "_(continued)_"

ERROR_LABEL = StatusLabel("⚠️", "Something went wrong", "this answer could not be completed.", warning=True)

#: Replaces the placeholder when a question could not be answered at all (the job failed for good).
#: The reply when a question could not be recorded (the database unreachable): nothing was queued, ask again.
RECORD_FAILED = "Sorry — I couldn't take your question just now. Please ask again in a minute."
FAILURE_NOTICE = ("Sorry — something went wrong while answering. The team has been notified; "
                  "please try again in a few minutes.")

#: Acknowledgements of a vote.
VOTE_UP_THANKS = "Thanks — glad it helped."
VOTE_DOWN_THANKS = "Thanks — your feedback was recorded and will help fix this answer."

#: "Ask a human".
NO_SUPPORT_CHANNEL = ("No support channel is configured, so I can't pass this on. "
                      "Please ask the support team directly.")
SUPPORT_UNREACHABLE = "I couldn't reach the support channel. Please ask the support team directly."


def escalated(where: str = "") -> str:
    """The question was passed on; ``where`` names the support channel in the surface's own syntax."""
    return f"I've asked the support team{f' in {where}' if where else ''}; someone will get back to you."


# --- fallback reasons: recorded in English, worded per language for the label -----------------------------
#: Why an answer is an extractive excerpt. These English texts are what is recorded (``fallback_reason``) and
#: what operators' figures group by (playbooks.status.INTENTIONAL_FALLBACKS); :func:`reason_text` words them.
REASON_NO_KEY = "no API key configured"
REASON_RETRIEVAL_ONLY = "retrieval-only mode"
REASON_CIRCUIT_OPEN = "the AI model is unavailable (circuit open)"
#: Followed by ": <technical detail>" (e.g. "overloaded (529)"), see :func:`unavailable` and :func:`request_failed`.
REASON_UNAVAILABLE = "the AI model is unavailable"
REASON_REQUEST_FAILED = "the AI model request failed"


def unavailable(detail: str) -> str:
    """The reason recorded when the model could not be reached (a transient failure): ``detail`` says how."""
    return f"{REASON_UNAVAILABLE}: {detail}"


def request_failed(detail: str) -> str:
    """The reason recorded when the model's API rejected the request or something unexpected happened."""
    return f"{REASON_REQUEST_FAILED}: {detail}"


# --- the wordings -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wording:
    """Everything Deskmate words itself in an answer, in one language."""

    language: str  # ISO 639-1, as knowledge.language.detect_language returns it
    excerpt_title: str  # the extractive answer's label: "<title> — <detail> (<reason>)."
    excerpt_detail: str
    excerpt_note: str  # the shorter note in the excerpt's own first line: "_<title> — <note> (<reason>)._"
    no_quote: str  # an excerpt with nothing to quote
    not_found: str  # how every "not found" reply begins
    closest_sources: str  # introduces the closest sources under a "not found" reply
    not_found_label: StatusLabel
    maintenance_label: StatusLabel
    maintenance_message: str  # the maintenance reply, unless an operator configured their own
    reasons: Mapping[str, str]  # REASON_* → its wording (the technical detail after ": " is not shown)
    open: str = " ("  # around the reason, and the full stop after it
    close: str = ")"
    stop: str = "."


#: The maintenance reply's default (DESKMATE_MAINTENANCE_MESSAGE); left at it, each asker gets it in their language.
DEFAULT_MAINTENANCE_MESSAGE: str = Settings.model_fields["maintenance_message"].default

ENGLISH_WORDING = Wording(
    language=ENGLISH,
    excerpt_title="Automatic excerpt",
    excerpt_detail="quoted from the sources, not written by the AI model",
    excerpt_note="not written by the AI model",
    no_quote="I found no passage to quote for this question.",
    not_found="I couldn't find this in the handbook or the other documents I can search.",
    closest_sources="These are the closest sources I found; they may still help:",
    not_found_label=StatusLabel("🔍", "Not found in the handbook", "nothing here answers this, so I won't guess."),
    maintenance_label=StatusLabel("⏸️", "Deskmate is paused", "this is an automatic reply."),
    maintenance_message=DEFAULT_MAINTENANCE_MESSAGE,
    reasons={},  # English shows the recorded reason as it is, technical detail included
)

# The translations below were written by an AI assistant (Claude) and should be reviewed by native speakers
# before they are relied on. Register: German and French address the reader formally (Sie, vous); Spanish,
# Portuguese (Brazilian usage), Italian and Dutch informally (tú, você, tu, je), as is usual in workplace chat;
# Chinese is Simplified.
_TRANSLATIONS = (
    Wording(
        language="de",
        excerpt_title="Automatischer Auszug",
        excerpt_detail="wörtlich aus den Quellen zitiert, nicht vom KI-Modell geschrieben",
        excerpt_note="nicht vom KI-Modell geschrieben",
        no_quote="Zu dieser Frage habe ich keine Textstelle gefunden, die ich zitieren könnte.",
        not_found="Dazu habe ich weder im Handbuch noch in den anderen Dokumenten, die ich durchsuchen kann, "
                  "etwas gefunden.",
        closest_sources="Diese Quellen kommen der Frage am nächsten; vielleicht helfen sie trotzdem weiter:",
        not_found_label=StatusLabel("🔍", "Nicht im Handbuch gefunden",
                                    "nichts hier beantwortet diese Frage, also rate ich lieber nicht."),
        maintenance_label=StatusLabel("⏸️", "Deskmate ist pausiert", "dies ist eine automatische Antwort."),
        maintenance_message="Deskmate ist wegen Wartungsarbeiten pausiert. Bitte wenden Sie sich direkt an das "
                            "Support-Team; Ihre Frage wurde gespeichert.",
        reasons={
            REASON_NO_KEY: "kein API-Schlüssel konfiguriert",
            REASON_RETRIEVAL_ONLY: "KI-Antworten sind abgeschaltet",
            REASON_CIRCUIT_OPEN: "das KI-Modell ist vorübergehend nicht verfügbar",
            REASON_UNAVAILABLE: "das KI-Modell ist nicht erreichbar",
            REASON_REQUEST_FAILED: "die Anfrage an das KI-Modell ist fehlgeschlagen",
        },
    ),
    Wording(
        language="es",
        excerpt_title="Extracto automático",
        excerpt_detail="citado literalmente de las fuentes, no redactado por el modelo de IA",
        excerpt_note="no redactado por el modelo de IA",
        no_quote="No encontré ningún pasaje que citar para esta pregunta.",
        not_found="No encontré esta información en el manual ni en los demás documentos que puedo consultar.",
        closest_sources="Estas son las fuentes más cercanas que encontré; quizá te sirvan de todos modos:",
        not_found_label=StatusLabel("🔍", "No está en el manual",
                                    "nada de lo que tengo responde a esto, así que prefiero no adivinar."),
        maintenance_label=StatusLabel("⏸️", "Deskmate está en pausa", "esta es una respuesta automática."),
        maintenance_message="Deskmate está en pausa por mantenimiento. Consulta directamente al equipo de "
                            "soporte; tu pregunta ha quedado registrada.",
        reasons={
            REASON_NO_KEY: "no hay ninguna clave de API configurada",
            REASON_RETRIEVAL_ONLY: "las respuestas de IA están desactivadas",
            REASON_CIRCUIT_OPEN: "el modelo de IA no está disponible temporalmente",
            REASON_UNAVAILABLE: "no se puede acceder al modelo de IA",
            REASON_REQUEST_FAILED: "la solicitud al modelo de IA ha fallado",
        },
    ),
    Wording(
        language="fr",
        excerpt_title="Extrait automatique",
        excerpt_detail="cité mot pour mot depuis les sources, non rédigé par le modèle d'IA",
        excerpt_note="non rédigé par le modèle d'IA",
        no_quote="Je n'ai trouvé aucun passage à citer pour cette question.",
        not_found="Je n'ai rien trouvé à ce sujet dans le manuel ni dans les autres documents que je peux "
                  "consulter.",
        closest_sources="Voici les sources les plus proches que j'ai trouvées ; elles pourront peut-être vous "
                        "aider :",
        not_found_label=StatusLabel("🔍", "Introuvable dans le manuel",
                                    "rien ici ne répond à cette question, je préfère donc ne pas deviner."),
        maintenance_label=StatusLabel("⏸️", "Deskmate est en pause", "ceci est une réponse automatique."),
        maintenance_message="Deskmate est en pause pour maintenance. Merci de vous adresser directement à "
                            "l'équipe support ; votre question a bien été enregistrée.",
        reasons={
            REASON_NO_KEY: "aucune clé d'API configurée",
            REASON_RETRIEVAL_ONLY: "réponses de l'IA désactivées",
            REASON_CIRCUIT_OPEN: "le modèle d'IA est momentanément indisponible",
            REASON_UNAVAILABLE: "le modèle d'IA est injoignable",
            REASON_REQUEST_FAILED: "la requête au modèle d'IA a échoué",
        },
    ),
    Wording(
        language="pt",
        excerpt_title="Trecho automático",
        excerpt_detail="citado literalmente das fontes, não escrito pelo modelo de IA",
        excerpt_note="não escrito pelo modelo de IA",
        no_quote="Não encontrei nenhum trecho para citar sobre esta pergunta.",
        not_found="Não encontrei isso no manual nem nos outros documentos que posso consultar.",
        closest_sources="Estas são as fontes mais próximas que encontrei; talvez ainda ajudem:",
        not_found_label=StatusLabel("🔍", "Não encontrado no manual",
                                    "nada aqui responde a isso, então prefiro não dar palpite."),
        maintenance_label=StatusLabel("⏸️", "Deskmate está pausado", "esta é uma resposta automática."),
        maintenance_message="O Deskmate está pausado para manutenção. Fale diretamente com a equipe de suporte; "
                            "sua pergunta foi registrada.",
        reasons={
            REASON_NO_KEY: "nenhuma chave de API configurada",
            REASON_RETRIEVAL_ONLY: "respostas por IA desativadas",
            REASON_CIRCUIT_OPEN: "o modelo de IA está temporariamente indisponível",
            REASON_UNAVAILABLE: "o modelo de IA está inacessível",
            REASON_REQUEST_FAILED: "a solicitação ao modelo de IA falhou",
        },
    ),
    Wording(
        language="it",
        excerpt_title="Estratto automatico",
        excerpt_detail="citato testualmente dalle fonti, non scritto dal modello di IA",
        excerpt_note="non scritto dal modello di IA",
        no_quote="Non ho trovato alcun passaggio da citare per questa domanda.",
        not_found="Non ho trovato nulla in merito nel manuale né negli altri documenti che posso consultare.",
        closest_sources="Queste sono le fonti più pertinenti che ho trovato; potrebbero comunque esserti utili:",
        not_found_label=StatusLabel("🔍", "Non trovato nel manuale",
                                    "qui non c'è nulla che risponda a questa domanda, quindi preferisco non "
                                    "tirare a indovinare."),
        maintenance_label=StatusLabel("⏸️", "Deskmate è in pausa", "questa è una risposta automatica."),
        maintenance_message="Deskmate è in pausa per manutenzione. Rivolgiti direttamente al team di supporto; "
                            "la tua domanda è stata registrata.",
        reasons={
            REASON_NO_KEY: "nessuna chiave API configurata",
            REASON_RETRIEVAL_ONLY: "risposte dell'IA disattivate",
            REASON_CIRCUIT_OPEN: "il modello di IA è temporaneamente non disponibile",
            REASON_UNAVAILABLE: "il modello di IA non è raggiungibile",
            REASON_REQUEST_FAILED: "la richiesta al modello di IA non è andata a buon fine",
        },
    ),
    Wording(
        language="nl",
        excerpt_title="Automatisch fragment",
        excerpt_detail="letterlijk geciteerd uit de bronnen, niet geschreven door het AI-model",
        excerpt_note="niet geschreven door het AI-model",
        no_quote="Ik heb voor deze vraag geen passage gevonden om te citeren.",
        not_found="Ik kon dit niet vinden in het handboek of in de andere documenten die ik kan doorzoeken.",
        closest_sources="Dit zijn de bronnen die er het dichtst bij komen; misschien heb je er toch iets aan:",
        not_found_label=StatusLabel("🔍", "Niet gevonden in het handboek",
                                    "niets hier beantwoordt deze vraag, dus ik ga niet gokken."),
        maintenance_label=StatusLabel("⏸️", "Deskmate is gepauzeerd", "dit is een automatisch antwoord."),
        maintenance_message="Deskmate is gepauzeerd voor onderhoud. Neem rechtstreeks contact op met het "
                            "supportteam; je vraag is vastgelegd.",
        reasons={
            REASON_NO_KEY: "geen API-sleutel geconfigureerd",
            REASON_RETRIEVAL_ONLY: "AI-antwoorden staan uit",
            REASON_CIRCUIT_OPEN: "het AI-model is tijdelijk niet beschikbaar",
            REASON_UNAVAILABLE: "het AI-model is niet bereikbaar",
            REASON_REQUEST_FAILED: "het verzoek aan het AI-model is mislukt",
        },
    ),
    Wording(
        language="zh",
        excerpt_title="自动摘录",
        excerpt_detail="逐字引自资料来源，并非由 AI 模型撰写",
        excerpt_note="并非由 AI 模型撰写",
        no_quote="没有找到可针对此问题引用的段落。",
        not_found="我在手册和其他可检索的文档中都没有找到相关内容。",
        closest_sources="以下是我找到的最相关的资料，或许仍有帮助：",
        not_found_label=StatusLabel("🔍", "手册中未找到", "这里没有能回答这个问题的内容，所以我不做猜测。"),
        maintenance_label=StatusLabel("⏸️", "Deskmate 已暂停", "这是一条自动回复。"),
        maintenance_message="Deskmate 正在维护，暂停服务。请直接联系支持团队；您的问题已记录。",
        reasons={
            REASON_NO_KEY: "未配置 API 密钥",
            REASON_RETRIEVAL_ONLY: "AI 回答功能已关闭",
            REASON_CIRCUIT_OPEN: "AI 模型暂时不可用",
            REASON_UNAVAILABLE: "无法连接 AI 模型",
            REASON_REQUEST_FAILED: "AI 模型请求失败",
        },
        open="（",
        close="）",
        stop="。",
    ),
    Wording(
        language="ja",
        excerpt_title="自動抜粋",
        excerpt_detail="資料からそのまま引用したもので、AI モデルが書いた文章ではありません",
        excerpt_note="AI モデルが書いた文章ではありません",
        no_quote="この質問について引用できる箇所が見つかりませんでした。",
        not_found="ハンドブックや検索できるほかのドキュメントに、この件に関する情報は見つかりませんでした。",
        closest_sources="最も関連がありそうな資料は以下のとおりです。参考になるかもしれません。",
        not_found_label=StatusLabel("🔍", "ハンドブックに記載なし",
                                    "この質問に答えられる情報がないため、推測での回答は控えます。"),
        maintenance_label=StatusLabel("⏸️", "Deskmate は一時停止中", "これは自動返信です。"),
        maintenance_message="Deskmate はメンテナンスのため一時停止しています。サポートチームに直接お問い合わせ"
                            "ください。ご質問は記録されています。",
        reasons={
            REASON_NO_KEY: "API キーが設定されていません",
            REASON_RETRIEVAL_ONLY: "AI による回答は停止中です",
            REASON_CIRCUIT_OPEN: "AI モデルが一時的に利用できません",
            REASON_UNAVAILABLE: "AI モデルに接続できません",
            REASON_REQUEST_FAILED: "AI モデルへのリクエストに失敗しました",
        },
        open="（",
        close="）",
        stop="。",
    ),
)

#: Every wording by language code; English first.
WORDINGS: dict[str, Wording] = {w.language: w for w in (ENGLISH_WORDING, *_TRANSLATIONS)}

# The English names the rest of the code (and its tests) know them by.
NOT_FOUND_TEXT = ENGLISH_WORDING.not_found
CLOSEST_SOURCES_TEXT = ENGLISH_WORDING.closest_sources
NOT_FOUND_LABEL = ENGLISH_WORDING.not_found_label
MAINTENANCE_LABEL = ENGLISH_WORDING.maintenance_label
FALLBACK_TITLE = ENGLISH_WORDING.excerpt_title
FALLBACK_DETAIL = ENGLISH_WORDING.excerpt_detail


def wording(language: str | None) -> Wording:
    """The wording for ``language`` (an ISO 639-1 code); English for any language without one."""
    return WORDINGS.get(language or ENGLISH, ENGLISH_WORDING)


def reason_text(reason: str, language: str | None = ENGLISH) -> str:
    """A recorded fallback reason worded in ``language``. English shows it as recorded; another language its
    translation, without the technical detail after ": " (that is for operators, and is in the record); a reason
    without a translation is shown as recorded."""
    words = wording(language)
    if words.language == ENGLISH:
        return reason
    if reason in words.reasons:
        return words.reasons[reason]
    category = reason.split(": ", 1)[0]
    return words.reasons.get(category, reason) if ": " in reason else reason


def _with_reason(text: str, reason: str | None, words: Wording) -> str:
    return f"{text}{words.open}{reason_text(reason, words.language)}{words.close}{words.stop}" if reason \
        else f"{text}{words.stop}"


def fallback_label(reason: str | None, language: str | None = ENGLISH) -> str:
    """The extractive answer's own first line (Markdown), e.g.
    ``_Automatic excerpt — not written by the AI model (no API key configured)._``"""
    words = wording(language)
    return f"_{_with_reason(f'{words.excerpt_title} — {words.excerpt_note}', reason, words)}_"


def fallback_status_label(reason: str | None, language: str | None = ENGLISH) -> StatusLabel:
    words = wording(language)
    return StatusLabel("⚠️", words.excerpt_title, _with_reason(words.excerpt_detail, reason, words), warning=True)


def maintenance_text(configured: str, language: str | None = ENGLISH) -> str:
    """The maintenance reply: the operator's own message as configured, or the default one in ``language``."""
    return wording(language).maintenance_message if configured == DEFAULT_MAINTENANCE_MESSAGE else configured


def status_label(status: Status | str, *, fallback: bool = False, fallback_reason: str | None = None,
                 language: str | None = ENGLISH) -> StatusLabel | None:
    """The label for an answer (or a recorded interaction) with this status; None for a normal answer."""
    words = wording(language)
    if status == Status.MAINTENANCE:
        return words.maintenance_label
    if status == Status.NOT_FOUND:
        return words.not_found_label
    if status == Status.ERROR:
        return ERROR_LABEL
    if fallback:
        return fallback_status_label(fallback_reason, words.language)
    return None


def answer_language(text: str) -> str:
    """The language an answer's own wording is in: that of its excerpt label, its "not found" opening or its
    maintenance reply; English otherwise (a model-written answer has no label to word)."""
    text = text.lstrip()
    for words in _TRANSLATIONS:
        if (text.startswith((f"_{words.excerpt_title} — {words.excerpt_note}", words.not_found))
                or text.rstrip() == words.maintenance_message):
            return words.language
    return ENGLISH


def answer_label(answer: Answer) -> StatusLabel | None:
    return status_label(answer.status, fallback=answer.fallback, fallback_reason=answer.fallback_reason,
                        language=answer_language(answer.text))


_OWN_FALLBACK_LABEL = re.compile(
    r"\A\s*_(?:" + "|".join(re.escape(f"{w.excerpt_title} — {w.excerpt_note}") for w in WORDINGS.values())
    + r")[^\n]*_\s*"
)


def answer_body(text: str, *, fallback: bool, fallback_reason: str | None = None) -> str:
    """The answer text to show under :func:`status_label`: an extractive answer starts with its own Markdown
    label (:func:`fallback_label`, in any language), which the surface's label replaces."""
    if fallback:
        text = _OWN_FALLBACK_LABEL.sub("", text, count=1)
    return text.strip()


# --- progress messages and the failure notice, per language --------------------------------------------------
# Written by an AI assistant (Claude), like the translations above: to be reviewed by native speakers.
_PROGRESS_WORDS: dict[str, dict[str, str]] = {
    "de": {PLACEHOLDER.text: "Ich sehe im Handbuch nach…", SEARCHING.text: "Durchsuche das Handbuch…",
           WRITING.text: "Schreibe die Antwort…",
           FAILURE_NOTICE: "Entschuldigung – beim Beantworten ist etwas schiefgelaufen. Das Team wurde informiert; "
                           "bitte versuchen Sie es in ein paar Minuten erneut.",
           RECORD_FAILED: "Entschuldigung – ich konnte Ihre Frage gerade nicht annehmen. Bitte fragen Sie "
                          "in einer Minute noch einmal."},
    "es": {PLACEHOLDER.text: "Revisando el manual…", SEARCHING.text: "Buscando en el manual…",
           WRITING.text: "Redactando…",
           FAILURE_NOTICE: "Lo siento, algo salió mal al responder. Hemos avisado al equipo; vuelve a intentarlo "
                           "en unos minutos.",
           RECORD_FAILED: "Lo siento, ahora mismo no he podido recibir tu pregunta. Vuelve a preguntar "
                          "en un minuto."},
    "fr": {PLACEHOLDER.text: "Je consulte le manuel…", SEARCHING.text: "Recherche dans le manuel…",
           WRITING.text: "Rédaction en cours…",
           FAILURE_NOTICE: "Désolé, une erreur s'est produite pendant la réponse. L'équipe a été prévenue ; "
                           "veuillez réessayer dans quelques minutes.",
           RECORD_FAILED: "Désolé, je n'ai pas pu prendre votre question pour le moment. Veuillez la "
                          "reposer dans une minute."},
    "pt": {PLACEHOLDER.text: "Consultando o manual…", SEARCHING.text: "Pesquisando no manual…",
           WRITING.text: "Escrevendo…",
           FAILURE_NOTICE: "Desculpe, algo deu errado ao responder. A equipe foi avisada; tente novamente em "
                           "alguns minutos.",
           RECORD_FAILED: "Desculpe, não consegui receber sua pergunta agora. Pergunte de novo daqui a "
                          "um minuto."},
    "it": {PLACEHOLDER.text: "Sto consultando il manuale…", SEARCHING.text: "Ricerca nel manuale…",
           WRITING.text: "Sto scrivendo…",
           FAILURE_NOTICE: "Spiacente, qualcosa è andato storto durante la risposta. Il team è stato avvisato; "
                           "riprova tra qualche minuto.",
           RECORD_FAILED: "Spiacente, al momento non sono riuscito a ricevere la tua domanda. Riprova "
                          "tra un minuto."},
    "nl": {PLACEHOLDER.text: "Ik kijk in het handboek…", SEARCHING.text: "Het handboek doorzoeken…",
           WRITING.text: "Bezig met schrijven…",
           FAILURE_NOTICE: "Sorry, er ging iets mis bij het beantwoorden. Het team is op de hoogte gebracht; "
                           "probeer het over een paar minuten opnieuw.",
           RECORD_FAILED: "Sorry, ik kon je vraag nu niet aannemen. Stel hem over een minuut opnieuw."},
    "zh": {PLACEHOLDER.text: "正在查阅手册…", SEARCHING.text: "正在搜索手册…", WRITING.text: "正在撰写…",
           FAILURE_NOTICE: "抱歉，回答时出了点问题。团队已收到通知，请过几分钟再试。",
           RECORD_FAILED: "抱歉，暂时无法接收你的问题。请一分钟后再问一次。"},
    "ja": {PLACEHOLDER.text: "ハンドブックを確認しています…", SEARCHING.text: "ハンドブックを検索しています…",
           WRITING.text: "回答を作成しています…",
           FAILURE_NOTICE: "申し訳ありません。回答中に問題が発生しました。担当チームに通知済みです。"
                           "数分後にもう一度お試しください。",
           RECORD_FAILED: "申し訳ありません。今はご質問を受け付けられませんでした。"
                          "1分ほどしてからもう一度お尋ねください。"},
}


def progress_in(progress: Progress, language: str | None) -> Progress:
    """A progress message (:data:`PLACEHOLDER`, :data:`SEARCHING`, :data:`WRITING`) in ``language``; English, as
    it is, for any other language or message."""
    return Progress(progress.icon, _PROGRESS_WORDS.get(language or ENGLISH, {}).get(progress.text, progress.text))


def record_failed_reply(language: str | None) -> str:
    """:data:`RECORD_FAILED` (the question could not be taken) in ``language`` (English for any other)."""
    return _PROGRESS_WORDS.get(language or ENGLISH, {}).get(RECORD_FAILED, RECORD_FAILED)


def failure_notice(language: str | None) -> str:
    """:data:`FAILURE_NOTICE` in ``language`` (English for any language without it)."""
    return _PROGRESS_WORDS.get(language or ENGLISH, {}).get(FAILURE_NOTICE, FAILURE_NOTICE)
