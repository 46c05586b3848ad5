import pytest

from bot.core import pricing
from bot.core.pricing import cost_usd, find_price
from bot.core.settings import DEFAULT_PRICES, ModelPrice
from bot.core.types import Usage

USAGE = Usage(input_tokens=1_000, output_tokens=500, cache_read_tokens=2_000, cache_write_tokens=400)


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.warnings.append((event, kw))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    log = RecordingLog()
    monkeypatch.setattr(pricing, "log", log)
    monkeypatch.setattr(pricing, "_warned_unknown", set())
    return log


def test_each_token_kind_has_its_own_price() -> None:
    # sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million tokens
    expected = (1_000 * 3.0 + 500 * 15.0 + 2_000 * 0.30 + 400 * 3.75) / 1_000_000
    assert cost_usd("claude-sonnet-4-5", USAGE, DEFAULT_PRICES) == pytest.approx(expected)
    assert cost_usd("claude-sonnet-4-5", Usage(), DEFAULT_PRICES) == 0.0


def test_dated_model_id_is_priced_by_its_alias() -> None:
    assert cost_usd("claude-sonnet-4-5-20250929", USAGE, DEFAULT_PRICES) == cost_usd(
        "claude-sonnet-4-5", USAGE, DEFAULT_PRICES
    )
    assert cost_usd("claude-haiku-4-5-20251001", USAGE, DEFAULT_PRICES) == pytest.approx(
        (1_000 * 1.0 + 500 * 5.0 + 2_000 * 0.10 + 400 * 1.25) / 1_000_000
    )


def test_longest_matching_prefix_wins() -> None:
    prices = {
        "claude-sonnet-4": ModelPrice(input=1, output=1, cache_read=1, cache_write=1),
        "claude-sonnet-4-5": ModelPrice(input=2, output=2, cache_read=2, cache_write=2),
    }
    assert find_price("claude-sonnet-4-5-20250929", prices) is prices["claude-sonnet-4-5"]
    assert find_price("claude-sonnet-4-20250514", prices) is prices["claude-sonnet-4"]
    assert find_price("claude-sonnet-4-5", prices) is prices["claude-sonnet-4-5"]


def test_unknown_model_costs_nothing_and_warns_once(recorded: RecordingLog) -> None:
    assert cost_usd("gpt-imaginary", USAGE, DEFAULT_PRICES) == 0.0
    assert cost_usd("gpt-imaginary", USAGE, DEFAULT_PRICES) == 0.0
    assert [event for event, _ in recorded.warnings] == ["model_price_unknown"]
    assert recorded.warnings[0][1]["model"] == "gpt-imaginary"
    cost_usd("another-unknown", USAGE, DEFAULT_PRICES)
    assert len(recorded.warnings) == 2


def test_known_model_does_not_warn(recorded: RecordingLog) -> None:
    cost_usd("claude-haiku-4-5-20251001", USAGE, DEFAULT_PRICES)
    assert recorded.warnings == []
