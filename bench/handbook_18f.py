"""The 18F (TTS) handbook in ../shared: where it is, and its FAQ as a qrels file of document ids.

The corpus is read in place, never copied into the project. A question's relevant document is the page its
answer was taken from (``source_file``), as a document id relative to the ``markdown`` folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SHARED = Path(os.environ.get("DESKMATE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CORPUS_DIR = SHARED / "corpora" / "handbook-18f-tts"
MARKDOWN_DIR = CORPUS_DIR / "markdown"
FAQ = CORPUS_DIR / "faq.jsonl"


def faq_items() -> list[dict]:
    items = []
    for i, line in enumerate(FAQ.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            doc_id = Path(row["source_file"]).relative_to("markdown").with_suffix("").as_posix()
            items.append({"qid": f"18f-{i:03d}", "question": row["question"], "relevant_doc_ids": [doc_id],
                          "answer": row["answer_excerpt"], "answerable": True})
    return items


def write_qrels(path: Path) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in faq_items()), encoding="utf-8")
    return path


if __name__ == "__main__":
    import sys

    print(write_qrels(Path(sys.argv[1] if len(sys.argv) > 1 else "faq-18f.qrels.jsonl")))
