"""Teams test helpers: recorded activities from the shared fixtures, a fake connector, a running stack."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bot.core.settings import Settings
from tests.conftest import FIXTURES_DIR
from tests.fakes.botframework import FakeConnector, start_fake_connector
from tests.stack import Stack, running_stack
from tests.waiting import wait_until

TEAMS_FIXTURES = FIXTURES_DIR / "teams"


def recorded(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(activity body, recorded headers) of a shared fixture; files hold either an envelope or a bare activity."""
    data = json.loads((TEAMS_FIXTURES / f"{name}.json").read_text())
    if "body" in data and "headers" in data:
        return copy.deepcopy(data["body"]), dict(data["headers"])
    return copy.deepcopy(data), {}


def activity(fixture: str, connector: FakeConnector, /, **changes: Any) -> dict[str, Any]:
    """A recorded activity pointed at the fake connector, with top-level fields changed."""
    body, _headers = recorded(fixture)
    body["serviceUrl"] = connector.service_url
    body.update(changes)
    return body


@pytest.fixture(scope="session")
async def fake_connector_server() -> AsyncIterator[FakeConnector]:
    async with start_fake_connector() as fake:
        yield fake


@pytest.fixture
def connector(fake_connector_server: FakeConnector) -> FakeConnector:
    fake_connector_server.reset()
    return fake_connector_server


def teams_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {"teams_delivery_backoff_s": 0.02, "teams_delivery_attempts": 4}
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
async def teams_stack(make_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    """Web + worker, Teams in development mode (no app id: no JWT), fast delivery retries."""
    async with running_stack(teams_settings(make_settings)) as stack:
        yield stack
        await settle(stack)


async def settle(stack: Stack, timeout_s: float = 30.0) -> None:
    """Wait until every question is answered and the worker has no job in flight, so that no answer of this
    test is delivered during the next one (arq's ``Worker.close()`` does not reliably stop a running job)."""
    if stack.worker is None:
        return
    worker = stack.worker

    async def settled() -> bool:
        pending = [row for row in await stack.interactions() if row.status == "pending"]
        return not pending and all(task.done() for task in worker.tasks.values())

    with contextlib.suppress(TimeoutError):  # best effort: the next test goes on regardless
        await wait_until(settled, timeout_s=timeout_s, interval_s=0.02)


async def post(stack: Stack, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await stack.client.post("/api/messages", json=body, headers=headers or {})


def walk(elements: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every element of a card body, depth first (containers, columns, table cells, a table's fallback)."""
    for element in elements:
        yield element
        yield from walk(element.get("items", []))
        for column in element.get("columns", []):
            yield from walk(column.get("items", []))
        for row in element.get("rows", []):
            for cell in row["cells"]:
                yield from walk(cell["items"])
        if isinstance(element.get("fallback"), dict) and not element["type"].startswith("Action."):
            yield from walk([element["fallback"]])


def card_text(elements: list[dict[str, Any]]) -> str:
    """The text of every TextBlock in ``elements`` (a card's body), nested ones included, one per line."""
    return "\n".join(e["text"] for e in walk(elements) if e["type"] == "TextBlock")
