"""Confluence sync cost against the local fake Confluence Cloud site (tests/fakes/confluence_api.py, real HTTP on
127.0.0.1): the bundled sample handbook's Markdown pages as Confluence pages (``--copies`` times), with a PDF
attachment on every fifth page and a read restriction on every seventh, synced into a fresh index.

    .venv/bin/python -m bench.bench_confluence [--copies N]

Prints documents/s and chunks/s of the first sync, the HTTP requests each sync made (listing vs. content), the
time of a re-sync with nothing changed, and of a re-sync after one edit. The fake answers instantly: the real
service adds its latency per request (typically 100-300 ms on Confluence Cloud), so the request counts are the
figures that carry over.
"""

from __future__ import annotations

import argparse
import html
import json
import tempfile
import time
from pathlib import Path

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from tests.fakes.confluence_api import FakeConfluence, start_fake_confluence
from tests.knowledge.test_formats import pdf_bytes


def storage_of(markdown: str) -> str:
    """Markdown headings and paragraphs as storage-format XHTML (enough for a realistic page)."""
    out = []
    for block in markdown.split("\n\n"):
        block = block.strip()
        if not block or block.startswith("---"):
            continue
        if block.startswith("#"):
            level = min(len(block) - len(block.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{html.escape(block.lstrip('#').strip())}</h{level}>")
        else:
            out.append(f"<p>{html.escape(' '.join(block.split()))}</p>")
    return "".join(out)


def requests_by_kind(site: FakeConfluence) -> dict[str, int]:
    counts = {"listing": 0, "page_bodies": 0, "downloads": 0, "restriction_reads": 0}
    for request in site.requests:
        if "/download/" in request.path:
            counts["downloads"] += 1
        elif "/restriction/" in request.path:
            counts["restriction_reads"] += 1
        elif request.path.startswith("/wiki/api/v2/pages/"):
            counts["page_bodies"] += 1
        else:
            counts["listing"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    pages_md = sorted(Path(SAMPLE_KNOWLEDGE_DIR).rglob("*.md"))
    with tempfile.TemporaryDirectory() as tmp_name, start_fake_confluence("cloud") as site:
        tmp = Path(tmp_name)
        site.add_space("HB", "Handbook")
        made = []
        for copy in range(args.copies):
            for number, path in enumerate(pages_md):
                page = site.add_page("HB", f"{path.stem.replace('-', ' ').title()} {copy}",
                                     storage_of(path.read_text(encoding="utf-8")))
                if number % 7 == 3:
                    page.read_groups = ["hr"]
                if number % 5 == 0:
                    site.attach(page, f"{path.stem}.pdf", "application/pdf",
                                pdf_bytes([path.stem.replace("-", " ").title(), "A printable copy of this page."]))
                made.append(page)
        (source,) = parse_sources([{"name": "wiki", "kind": "confluence", "base_url": site.base_url,
                                    "email": site.email, "token_env": "T", "spaces": ["HB"], "page_size": 250}])
        environ = {"T": site.token}
        store = IndexStore(KnowledgeConfig(index_dir=tmp / "index", chroma_dir=tmp / "chroma"))
        store.embedder.embed(["warm up"])  # model load is not sync time
        work = tmp / "work"

        t0 = time.perf_counter()
        first = sync_source(store, source, [source], work_root=work, default_kb="b", environ=environ)
        first_s = time.perf_counter() - t0
        first_requests = requests_by_kind(site)
        chunks = int(store.manifest("b").latest["chunk_count"])  # type: ignore[index]

        site.requests.clear()
        t0 = time.perf_counter()
        again = sync_source(store, source, [source], work_root=work, default_kb="b", environ=environ)
        again_s = time.perf_counter() - t0
        again_requests = requests_by_kind(site)

        site.edit(made[0], body=made[0].body + "<p>Edited for the benchmark.</p>")
        site.requests.clear()
        t0 = time.perf_counter()
        one = sync_source(store, source, [source], work_root=work, default_kb="b", environ=environ)
        one_s = time.perf_counter() - t0
        one_requests = requests_by_kind(site)

        print(json.dumps({
            "pages": len(made), "documents": len(first.added), "chunks": chunks, "status": first.status,
            "first_sync_s": round(first_s, 1), "documents_per_s": round(len(first.added) / first_s, 2),
            "chunks_per_s": round(chunks / first_s, 1), "first_sync_requests": first_requests,
            "resync_unchanged_s": round(again_s, 2), "resync_status": again.status,
            "resync_unchanged_requests": again_requests,
            "resync_one_edit_s": round(one_s, 2), "one_edit_updated": len(one.updated),
            "resync_one_edit_requests": one_requests,
        }, indent=1))


if __name__ == "__main__":
    main()
