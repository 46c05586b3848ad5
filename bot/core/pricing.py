"""What an LLM call cost, from its token usage and a price table (US dollars per million tokens).

The API reports the dated model id it ran (``claude-sonnet-4-5-20250929``) while price tables are keyed by
the alias (``claude-sonnet-4-5``), so a model is priced by the longest table key that is a prefix of its name.
"""

from __future__ import annotations

from bot.core.log import get_logger
from bot.core.settings import ModelPrice
from bot.core.types import Usage

log = get_logger(__name__)

_PER_TOKEN = 1 / 1_000_000

#: Models already warned about, so an unpriced model logs once per process rather than once per answer.
_warned_unknown: set[str] = set()


def find_price(model: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: the entry whose key is the longest prefix of the name, if any."""
    if model in prices:
        return prices[model]
    matches = [key for key in prices if key and model.startswith(key)]
    if not matches:
        return None
    return prices[max(matches, key=len)]


def cost_usd(model: str, usage: Usage, prices: dict[str, ModelPrice]) -> float:
    """US dollars for one call; 0.0 (and a one-time warning) for a model the table does not price."""
    price = find_price(model, prices)
    if price is None:
        if model not in _warned_unknown:
            _warned_unknown.add(model)
            log.warning("model_price_unknown", model=model, known=sorted(prices))
        return 0.0
    return _PER_TOKEN * (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
