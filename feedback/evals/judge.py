"""An LLM judge with a fixed rubric: does the answer state what the reference answer states?

Token F1 punishes a correct answer in other words and rewards one that copies words without the point; a
judge reads both. The rubric is fixed and versioned (:data:`RUBRIC_VERSION`) so that grades from different runs
compare; it grades against the reference, not against general knowledge. Only used with an API key
(``DESKMATE_EVAL_JUDGE``, on by default), through the anthropic SDK like the answers themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from anthropic import AsyncAnthropic

from bot.core.log import get_logger
from bot.core.pricing import cost_usd
from bot.core.settings import Settings
from bot.core.types import Usage

log = get_logger(__name__)

RUBRIC_VERSION = "judge-v1"

RUBRIC = """\
You grade answers given by a company's internal support assistant. You get an employee's question, a \
reference answer written by a person who checked the company documents, and the assistant's answer.

Grade only whether the assistant's answer gives the information of the reference answer that answers the \
question. Use the reference as the truth; do not use outside knowledge. Ignore style, length, formatting, \
citation markers and any note that the answer is an automatic excerpt.

- 2 = correct: it states the key facts of the reference that answer the question and contradicts none of \
them. Extra detail that does not contradict the reference is fine.
- 1 = partly correct: it gives some of the key facts but misses or blurs an important one (a number, a \
condition, a step, who to contact), or it answers only part of the question.
- 0 = incorrect: it contradicts the reference, misses the point, says it cannot answer, or consists of \
text that does not answer the question.

Reply with exactly two lines and nothing else:
SCORE: <0, 1 or 2>
REASON: <one short sentence>
"""

_SCORE = re.compile(r"SCORE\s*[:=]\s*([012])\b", re.IGNORECASE)
_REASON = re.compile(r"REASON\s*[:=]\s*(.+)", re.IGNORECASE)


@dataclass
class Verdict:
    score: float | None  # 0, 0.5, 1; None when the judge failed
    reason: str
    cost_usd: float = 0.0


def judge_prompt(question: str, reference: str, answer: str) -> str:
    return (f"<question>\n{question.strip()}\n</question>\n\n<reference_answer>\n{reference.strip()}\n"
            f"</reference_answer>\n\n<assistant_answer>\n{answer.strip()}\n</assistant_answer>")


def parse_verdict(text: str) -> tuple[float | None, str]:
    score = _SCORE.search(text or "")
    reason = _REASON.search(text or "")
    value = int(score.group(1)) / 2 if score else None
    return value, (reason.group(1).strip()[:300] if reason else (text or "").strip()[:300])


class Judge:
    """Grades one answer per call; never raises (a failed call is a verdict without a score)."""

    def __init__(self, settings: Settings, client: AsyncAnthropic | None = None, *, model: str | None = None) -> None:
        self.settings = settings
        self.model = model or settings.eval_judge_model or settings.anthropic_model
        self._own_client = client is None
        self.client = client or AsyncAnthropic(api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url,
                                               max_retries=settings.llm_max_retries, timeout=settings.llm_timeout_s)

    @property
    def name(self) -> str:
        return f"{self.model} ({RUBRIC_VERSION})"

    async def grade(self, question: str, reference: str, answer: str) -> Verdict:
        try:
            message = await self.client.messages.create(
                model=self.model, max_tokens=200, system=RUBRIC,
                messages=[{"role": "user", "content": judge_prompt(question, reference, answer)}],
            )
        except Exception as exc:  # noqa: BLE001 - a judge failure costs a grade, not the run
            log.warning("eval.judge_failed", error=type(exc).__name__)
            return Verdict(None, f"judge failed: {type(exc).__name__}")
        text = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", None) == "text")
        usage = Usage(input_tokens=message.usage.input_tokens or 0, output_tokens=message.usage.output_tokens or 0)
        score, reason = parse_verdict(text)
        if score is None:
            reason = f"unparseable verdict: {reason}"
        return Verdict(score, reason, cost_usd(str(message.model), usage, self.settings.model_prices))

    async def close(self) -> None:
        if self._own_client:
            await self.client.close()


def make_judge(settings: Settings, *, enabled: bool | None = None) -> Judge | None:
    """A judge when an API key is configured and judging is on (``enabled`` overrides the setting)."""
    on = settings.eval_judge if enabled is None else enabled
    return Judge(settings) if on and settings.anthropic_api_key else None
