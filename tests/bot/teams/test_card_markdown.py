"""Answers in Teams cards are formatted for what Teams renders: the model's Markdown (and the extractive fallback's
``> quote`` lines) become headings, tables, shaded quotes, monospace code and lists — never raw ``#``, ``|---|``,
``>`` or fenced code — with the citations ``[n]`` and the numbered sources kept."""

from __future__ import annotations

import json
from typing import Any

from bot.core.types import Answer, Source
from bot.fallback import extractive_answer
from bot.teams.cards import MAX_CARD_BYTES, answer_card, card_bytes
from bot.teams.markdown import markdown_elements
from knowledge.passage import Passage
from tests.bot.teams.conftest import card_text, walk

NBSP = "\u00a0"


def text_blocks(elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in walk(elements) if e["type"] == "TextBlock"]


def all_text(elements: list[dict[str, Any]]) -> str:
    return card_text(elements)


def sources(n: int) -> list[Source]:
    return [Source(number=i, doc_id=f"doc/{i}", title=f"Policy {i}", location=f"https://handbook.example.com/{i}")
            for i in range(1, n + 1)]


MODEL_ANSWER = """## Travel meals

You can claim meals while travelling [1].

| Meal | Limit |
|:-----|------:|
| Breakfast | €10 [1] |
| Dinner | **€25** [2] |

> Receipts are required for every claim [2].

Steps:

1. Open the expenses app
2. Add the receipt
   - photo or PDF
   - under 10 MB
3. Submit

```bash
expenses submit --trip 42
  --currency EUR
```
"""


def test_headings_become_bold_text_blocks_without_hashes() -> None:
    elements = markdown_elements("# Leave\n\n### Carry-over\n\nUp to 5 days [1].")
    h1, h3, paragraph = elements
    assert (h1["text"], h1["weight"], h1["size"]) == ("Leave", "Bolder", "Large")
    assert (h3["text"], h3["weight"]) == ("Carry-over", "Bolder") and "size" not in h3
    assert paragraph == {"type": "TextBlock", "text": "Up to 5 days [1].", "wrap": True}
    assert "#" not in all_text(elements)


def test_tables_become_adaptive_card_tables_with_a_header_row_and_a_fallback() -> None:
    [table] = [e for e in markdown_elements(MODEL_ANSWER) if e["type"] == "Table"]
    assert table["firstRowAsHeader"] is True
    assert [c.get("horizontalCellContentAlignment") for c in table["columns"]] == ["Left", "Right"]
    cells = [[cell["items"][0]["text"] for cell in row["cells"]] for row in table["rows"]]
    assert cells == [["Meal", "Limit"], ["Breakfast", "€10 [1]"], ["Dinner", "**€25** [2]"]]
    assert all(cell["items"][0]["weight"] == "Bolder" for cell in table["rows"][0]["cells"])
    assert table["fallback"]["type"] == "TextBlock" and "Dinner · **€25** [2]" in table["fallback"]["text"]
    assert "|" not in all_text([table]) and "---" not in all_text([table])


def test_block_quotes_become_shaded_containers() -> None:
    [quote] = [e for e in markdown_elements(MODEL_ANSWER) if e["type"] == "Container" and
               "Receipts" in all_text([e])]
    assert quote["style"] == "emphasis"
    assert [b["text"] for b in text_blocks([quote])] == ["Receipts are required for every claim [2]."]


def test_code_blocks_are_monospace_line_by_line_with_their_indentation() -> None:
    [code] = [e for e in markdown_elements(MODEL_ANSWER) if e["type"] == "Container" and
              "expenses submit" in all_text([e])]
    lines = text_blocks([code])
    assert all(line["fontType"] == "Monospace" for line in lines)
    assert [line["text"] for line in lines] == ["expenses submit --trip 42", f"{NBSP * 2}--currency EUR"]
    assert "```" not in all_text(markdown_elements(MODEL_ANSWER))


def test_lists_are_kept_as_teams_list_markdown_and_nested_lists_are_indented() -> None:
    elements = markdown_elements(MODEL_ANSWER)
    texts = [e["text"] for e in elements if e["type"] == "TextBlock"]
    assert "1. Open the expenses app\r2. Add the receipt" in texts
    assert "3. Submit" in texts, "numbering goes on after the nested list"
    [nested] = [e for e in elements if e["type"] == "ColumnSet"]
    assert nested["columns"][0]["width"] == "16px"
    assert [b["text"] for b in text_blocks([nested])] == ["- photo or PDF\r- under 10 MB"]


def test_literal_markup_characters_are_escaped_and_citations_kept() -> None:
    [block] = markdown_elements(r"Use 2 \* 3 and a file_name, not \_this\_ [1][2]. Inline `code_x` too.")
    assert block["text"] == r"Use 2 \* 3 and a file_name, not \_this\_ [1][2]. Inline code_x too."
    [numbered] = markdown_elements(r"2024\. was a good year.")
    assert numbered["text"] == r"2024\. was a good year.", "not a numbered list in Teams"


def test_links_in_answers_stay_links_and_unsafe_ones_do_not() -> None:
    [block] = markdown_elements("Book on [the portal](https://travel.example.com/book) [1] or "
                                "<https://travel.example.com>.")
    assert block["text"] == ("Book on [the portal](https://travel.example.com/book) [1] or "
                             "[https://travel.example.com](https://travel.example.com).")
    [unsafe] = markdown_elements("[click](javascript:alert(1))")
    assert unsafe["text"] == "[click] (javascript:alert(1))", "literal text, not a link, on any renderer"


def test_a_model_answer_card_shows_no_raw_markdown_and_keeps_sources_and_buttons() -> None:
    card = answer_card(Answer(interaction_id=9, text=MODEL_ANSWER, sources=sources(2)))
    text = all_text(card["body"])
    for raw in ("## ", "|:---", "```", "\n> ", "> Receipts"):
        assert raw not in text
    assert "Travel meals" in text and "[1]" in text and "[2]" in text
    assert "1. [Policy 1](https://handbook.example.com/1)\n\n2. [Policy 2](https://handbook.example.com/2)" in text
    assert [e["type"] for e in card["body"]][-1] == "ActionSet"
    json.dumps(card)  # serialisable as sent


PASSAGES = [
    Passage(chunk_id=f"c{i}", doc_id=f"hr/leave-{i}", kb="hr", knowledge_set="default", title=f"Leave {i}",
            location=f"https://handbook.example.com/leave-{i}", heading="Annual leave", text=text, score=1.0 - i / 10,
            index_version=1)
    for i, text in enumerate([
        "Full-time employees get 25 days of annual leave per year. Part-time staff get a pro-rata share.",
        "Unused annual leave of up to 5 days can be carried over to the next year with approval.",
    ])
]


def test_the_extractive_fallbacks_quotes_are_shaded_boxes_under_one_label() -> None:
    text, found = extractive_answer("How many days of annual leave do I get and can I carry it over?", PASSAGES,
                                    "no API key configured")
    assert text.count("\n> ") >= 1
    card = answer_card(Answer(interaction_id=3, text=text, sources=found, fallback=True,
                              fallback_reason="no API key configured"))
    label, *rest = card["body"]
    assert "Automatic excerpt" in label["text"] and "no API key configured" in label["text"]
    quotes = [e for e in rest if e["type"] == "Container" and e.get("style") == "emphasis"]
    assert len(quotes) == text.count("> ")
    for quote in quotes:
        [block] = text_blocks([quote])
        assert not block["text"].startswith(">") and block["text"].rstrip().endswith("]")
    assert "Automatic excerpt" not in all_text(rest), "the answer's own label is not shown twice"
    assert ">" not in all_text(quotes)


def test_a_huge_structured_answer_is_shortened_under_the_limit_with_a_note() -> None:
    rows = "\n".join(f"| item {i} | {i} € |" for i in range(2000))
    code = "\n".join(f"    line {i}" for i in range(500))
    answer = Answer(interaction_id=5, text=f"# Big\n\n| a | b |\n|---|---|\n{rows}\n\n```\n{code}\n```",
                    sources=sources(8))
    card = answer_card(answer)
    assert card_bytes(card) <= MAX_CARD_BYTES
    assert "shortened to fit Teams" in all_text(card["body"])
    assert any(e["type"] == "Table" for e in card["body"])
