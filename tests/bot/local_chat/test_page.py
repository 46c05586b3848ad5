"""The /chat page in a real browser, as an operator turned it on in production: sign in with the token once, ask,
ask a follow-up in the same conversation, vote — the page carries the conversation's token itself."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import select

from bot.core.identity import hash_user
from bot.core.settings import Settings
from feedback.models import Feedback
from tests.bot.local_chat.test_access import ON_IN_PRODUCTION, TOKEN
from tests.stack import running_stack

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def test_the_page_asks_follows_up_and_votes_in_one_conversation(make_settings: Callable[..., Settings]) -> None:
    from playwright.async_api import async_playwright

    async with running_stack(make_settings(**ON_IN_PRODUCTION)) as stack, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            response = await page.goto(f"{stack.url}/chat?token={TOKEN}")
            assert response is not None and response.status == 200
            assert page.url == f"{stack.url}/chat", "the token left the address bar"
            for n, question in enumerate(("How much is the daily meal allowance when I travel?",
                                          "And is breakfast included?"), start=1):
                await page.fill("#text", question)
                await page.press("#text", "Enter")
                await page.wait_for_selector(f".msg.bot:nth-of-type({2 * n}) .sources", timeout=30_000)
            first = page.locator(".msg.bot").first
            await first.locator("button[data-vote=up]").click()
            await first.locator("button.chosen[data-vote=up]").wait_for()
            sources = await first.locator(".sources").inner_text()
        finally:
            await browser.close()
        rows = await stack.interactions()
        async with stack.db.asession() as session:
            votes = list((await session.exec(select(Feedback))).all())
    assert "Per diem and meals" in sources
    assert len(rows) == 2 and rows[0].channel == rows[1].channel, "the follow-up is in the same conversation"
    assert [(v.interaction_id, v.label) for v in votes] == [(rows[0].id, "up")]
    assert votes[0].user_hash == hash_user("token:token", stack.settings.user_hash_salt)
