"""Notion source sync: the bundled sample handbook as Notion pages (one page per document, its Markdown turned into
heading, list and paragraph blocks) in the local fake of the Notion API, synced into a fresh index, re-synced with
nothing changed, and re-synced after one page was edited. Prints the API requests each sync made and the time it
took with no interval between requests, and the time the same requests take at the default ``min_interval_s``
(0.35 s, Notion's ~3 requests/s), which bounds a real sync.

    .venv/bin/python -m bench.bench_notion
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import parse_sources
from knowledge.connectors.notion import NotionSource
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.sources import split_front_matter
from tests.fakes.notion_api import FakeNotion, bullet, heading, para, start_fake_notion

DEFAULT_INTERVAL_S = NotionSource.model_fields["min_interval_s"].default


def blocks_of(markdown: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in markdown.splitlines():
        line = line.strip()
        if not line or line.startswith("# "):
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4) - 1
            out.append(heading(max(level, 1), line.lstrip("#").strip()))
        elif line.startswith(("- ", "* ")):
            out.append(bullet(line[2:]))
        else:
            out.append(para(line))
    return out


def load(notion: FakeNotion) -> list[str]:
    ids = []
    for path in sorted(SAMPLE_KNOWLEDGE_DIR.rglob("*.md")):
        meta, body = split_front_matter(path.read_text(encoding="utf-8"))
        title = str(meta.get("title") or path.stem.replace("-", " ").title())
        ids.append(notion.add_page(title, blocks=blocks_of(body)))
    return ids


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name, start_fake_notion(token="bench") as notion:
        tmp = Path(tmp_name)
        pages = load(notion)
        (source,) = parse_sources([{"name": "hb", "kind": "notion", "token_env": "T", "api_url": notion.url,
                                    "min_interval_s": 0}])
        store = IndexStore(KnowledgeConfig(index_dir=tmp / "index", chroma_dir=tmp / "chroma"))
        store.embedder.embed(["warm up"])  # model load is not sync time
        results = {}
        for label in ("first sync", "re-sync, nothing changed", "re-sync, one page edited"):
            if label == "re-sync, one page edited":
                notion.edit(pages[0], blocks=[para("This page was rewritten for the benchmark.")])
            notion.requests.clear()
            t0 = time.perf_counter()
            result = sync_source(store, source, [source], work_root=tmp / "work", default_kb="b",
                                 environ={"T": "bench"})
            seconds = time.perf_counter() - t0
            requests = len(notion.requests)
            results[label] = {"status": result.status, "documents": len(result.added) + len(result.updated),
                              "requests": requests, "seconds": round(seconds, 2),
                              "seconds_at_default_interval": round(seconds + requests * DEFAULT_INTERVAL_S, 1)}
        print(json.dumps({"pages": len(pages), **results}, indent=1))


if __name__ == "__main__":
    main()
