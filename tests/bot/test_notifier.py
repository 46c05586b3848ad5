"""Alerts to the admins' Slack channel: posted through the real Slack client, never as control sequences."""

from __future__ import annotations

from pathlib import Path

from bot.notifier import AdminChannelNotifier
from tests.bot.slack.control_sequences import control_sequences
from tests.conftest import settings_for
from tests.fakes.slack_api import start_fake_slack


async def test_an_alert_reaches_the_admin_channel_with_outside_values_shown_literally(tmp_path: Path) -> None:
    async with start_fake_slack() as slack:
        settings = settings_for(tmp_path, admin_channel="C0ADMINS", slack_bot_token="xoxb-test",
                                slack_api_url=slack.api_url)
        text = "Release <!channel> & friends: error rate 40% (error: <@U999> said <https://evil|click>)"
        assert await AdminChannelNotifier(settings).notify(text) is True
        [call] = slack.calls_to("chat.postMessage", channel="C0ADMINS")
    posted = call.args["text"]
    assert control_sequences(posted) == [], posted
    assert posted == ("Release &lt;!channel&gt; &amp; friends: error rate 40% "
                      "(error: &lt;@U999&gt; said &lt;https://evil|click&gt;)")


async def test_without_a_channel_or_token_the_alert_is_only_stored(tmp_path: Path) -> None:
    assert await AdminChannelNotifier(settings_for(tmp_path)).notify("budget reached") is False
