"""A document without a URL is cited by its path below the source folder on every surface, never by a server path
(and an absolute path stored by an index built before that is cut at display time). The local chat's JSON is
covered in tests/bot/local_chat/test_access.py."""

from __future__ import annotations

import json

from bot.core.types import Answer, Source
from bot.slack.rendering import render_answer
from bot.teams.cards import answer_card

SERVER = "/srv/deskmate/knowledge"
SOURCES = [
    Source(number=1, doc_id="handbook/travel", title="Travel", heading="Trains", location="handbook/travel.md"),
    Source(number=2, doc_id="it/vpn", title="VPN", location=f"{SERVER}/it/vpn.md"),  # stored by an earlier index
    Source(number=3, doc_id="people/leave", title="Leave", location="https://handbook.example/people/leave"),
]
ANSWER = Answer(interaction_id=5, text="Book trains [1]; connect first [2]; leave [3].", sources=SOURCES)


def test_slack_blocks_show_relative_paths_unlinked_and_no_server_path() -> None:
    message = render_answer(ANSWER)
    dumped = json.dumps(message)
    assert SERVER not in dumped and "/srv" not in dumped
    sources = message["blocks"][-2]["elements"][0]["text"]
    assert "[1] Travel › Trains — handbook/travel.md" in sources
    assert "[2] VPN — it/vpn.md" in sources
    assert "<handbook/travel.md" not in sources and "<it/vpn.md" not in sources, "a path is never a link"
    assert "<https://handbook.example/people/leave|[3] Leave>" in sources


def test_teams_card_shows_relative_paths_unlinked_and_no_server_path() -> None:
    card = answer_card(ANSWER)
    dumped = json.dumps(card)
    assert SERVER not in dumped and "/srv" not in dumped
    lines = next(b["text"] for b in card["body"] if "handbook/travel.md" in b.get("text", ""))
    assert "1. Travel › Trains — handbook/travel.md" in lines
    assert "2. VPN — it/vpn.md" in lines
    assert "](handbook/travel.md)" not in lines and "](it/vpn.md)" not in lines, "a path is never a link"
    assert "3. [Leave](https://handbook.example/people/leave)" in lines
