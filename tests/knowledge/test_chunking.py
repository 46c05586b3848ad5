"""Chunks keep their heading path and never cross a heading."""

from __future__ import annotations

from knowledge.chunking import chunk_document


def test_heading_path_and_title_not_repeated() -> None:
    text = ("# Travel\n\nIntro to travel.\n\n## Per diem\n\nDaily allowance rules.\n\n### Meals\n\n"
            "Breakfast is 15%.\n\n## Booking\n\nUse TripDesk.\n")
    chunks = chunk_document("travel/guide", "Travel", text)
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Intro to travel."),
        ("Per diem", "Daily allowance rules."),
        ("Per diem › Meals", "Breakfast is 15%."),
        ("Booking", "Use TripDesk."),
    ]
    assert [c.chunk_id for c in chunks] == [f"travel/guide#{i}" for i in range(4)]


def test_long_sections_split_near_the_target_with_overlap() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 60 for i in range(10)]
    chunks = chunk_document("d", "T", "## Long\n\n" + "\n\n".join(paragraphs), target_words=150, overlap_words=70)
    assert len(chunks) >= 4
    assert all(len(c.text.split()) <= 200 for c in chunks)
    assert all(c.heading == "Long" for c in chunks)
    # consecutive chunks share a paragraph (the overlap keeps a sentence's context)
    assert chunks[1].text.split("\n\n")[0] == chunks[0].text.split("\n\n")[-1]


def test_headings_inside_code_fences_are_not_headings() -> None:
    chunks = chunk_document("d", "T", "## Setup\n\n```\n# not a heading\n```\n\nRun it.\n")
    assert {c.heading for c in chunks} == {"Setup"}
