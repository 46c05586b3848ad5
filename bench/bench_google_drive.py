"""Google Drive source: the bundled sample handbook as Google Docs in a Drive folder tree (served by the local fake
of Drive API v3, tests/fakes/google_drive_api.py), synced into a fresh index (documents/s, chunks/s), re-synced
with nothing changed, and re-synced after one edit — with the Drive calls each sync made. Then the connector
alone on a larger tree (``--files`` files in ``--folders`` folders, no index): the first listing and an unchanged
re-sync, to show what the listing costs apart from the embedding.

    .venv/bin/python -m bench.bench_google_drive [--files 2000] [--folders 40]

The fake answers on 127.0.0.1, so the figures are the connector's and the index's work plus loopback HTTP, not
Google's latency (the real API adds ~100-300 ms per call: count the calls).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from markdown_it import MarkdownIt

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.sources import split_front_matter
from tests.fakes.google_drive_api import DOC, FakeDrive, generate_key, start_fake_drive

ACCOUNT = "bench@deskmate-bench.iam.gserviceaccount.com"
DOMAIN = [{"id": "1k", "type": "domain", "role": "reader", "domain": "example.com"}]


def calls(drive: FakeDrive) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for _, path, query, _ in drive.requests:
        kind = ("export" if path.endswith("/export") else "download" if query.get("alt") == "media"
                else "permissions.list" if path.endswith("/permissions") else "files.list" if path == "/drive/v3/files"
                else "changes.list" if path == "/drive/v3/changes" else "token" if path == "/token"
                else "changes.getStartPageToken" if path.endswith("/startPageToken") else "files.get")
        kinds[kind] += 1
    drive.requests.clear()
    return dict(sorted(kinds.items()))


def key_file(tmp: Path, drive: FakeDrive) -> Path:
    private, public = generate_key()
    drive.add_service_account(ACCOUNT, public)
    path = tmp / "key.json"
    path.write_text(json.dumps({"type": "service_account", "private_key": private, "client_email": ACCOUNT,
                                "token_uri": drive.token_uri}))
    return path


def handbook_sync(tmp: Path) -> dict[str, object]:
    render = MarkdownIt()
    with start_fake_drive() as drive:
        key = key_file(tmp, drive)
        root = drive.folder("Handbook")
        folders: dict[Path, str] = {Path("."): root}
        first_doc = ""
        for page in sorted(SAMPLE_KNOWLEDGE_DIR.rglob("*.md")):
            rel = page.relative_to(SAMPLE_KNOWLEDGE_DIR)
            for parent in reversed(rel.parents[:-1]):
                if parent not in folders:
                    folders[parent] = drive.folder(parent.name, folders[parent.parent])
            _, body = split_front_matter(page.read_text(encoding="utf-8"))
            html = f"<html><head></head><body>{render.render(body)}</body></html>".encode()
            doc = drive.add(rel.stem.replace("-", " ").capitalize(), folders[rel.parent], DOC, html,
                            export_type="text/html", permissions=DOMAIN)
            first_doc = first_doc or doc
        (source,) = parse_sources([{"name": "hb", "kind": "google_drive", "folder_id": root,
                                    "service_account_file": str(key), "api_url": drive.url}])
        store = IndexStore(KnowledgeConfig(index_dir=tmp / "index", chroma_dir=tmp / "chroma"))
        store.embedder.embed(["warm up"])  # model load is not sync time
        drive.requests.clear()
        t0 = time.perf_counter()
        first = sync_source(store, source, [source], work_root=tmp / "work", default_kb="b")
        first_s, first_calls = time.perf_counter() - t0, calls(drive)
        chunks = int(store.manifest("b").latest["chunk_count"])  # type: ignore[index]
        t0 = time.perf_counter()
        again = sync_source(store, source, [source], work_root=tmp / "work", default_kb="b")
        again_s, again_calls = time.perf_counter() - t0, calls(drive)
        drive.edit(first_doc, drive.items[first_doc].content.replace(b"</body>", b"<p>Edited for the bench.</p>"
                                                                              b"</body>"))
        t0 = time.perf_counter()
        one = sync_source(store, source, [source], work_root=tmp / "work", default_kb="b")
        one_s, one_calls = time.perf_counter() - t0, calls(drive)
        return {"documents": len(first.added), "folders": len(folders) - 1, "chunks": chunks,
                "first_sync_s": round(first_s, 1), "documents_per_s": round(len(first.added) / first_s, 2),
                "chunks_per_s": round(chunks / first_s, 1), "first_sync_calls": first_calls,
                "resync_unchanged_s": round(again_s, 2), "resync_status": again.status,
                "resync_unchanged_calls": again_calls,
                "resync_one_changed_s": round(one_s, 2), "one_changed_updated": len(one.updated),
                "resync_one_changed_calls": one_calls}


def listing_only(tmp: Path, files: int, folders: int) -> dict[str, object]:
    with start_fake_drive() as drive:
        key = key_file(tmp, drive)
        root = drive.folder("Big")
        parents = [root] + [drive.folder(f"Team {i}", root) for i in range(folders)]
        for i in range(files):
            drive.add(f"Page {i}", parents[i % len(parents)], DOC, b"<html><body><p>x</p></body></html>",
                      export_type="text/html", permissions=DOMAIN)
        (source,) = parse_sources([{"name": "big", "kind": "google_drive", "folder_id": root,
                                    "service_account_file": str(key), "api_url": drive.url, "page_size": 1000}])
        connector = source.open_connector(tmp / "big")
        drive.requests.clear()
        t0 = time.perf_counter()
        first = connector.changes(None)
        first_s, first_calls = time.perf_counter() - t0, calls(drive)
        t0 = time.perf_counter()
        again = connector.changes(first.cursor)
        again_s, again_calls = time.perf_counter() - t0, calls(drive)
        return {"files": len(first.changed), "folders": folders, "first_listing_s": round(first_s, 2),
                "first_listing_calls": first_calls, "unchanged_resync_s": round(again_s, 3),
                "unchanged_resync_calls": again_calls, "unchanged_resync_documents_listed": len(again.changed),
                "cursor_kb": round(len(first.cursor) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--folders", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        results = {"handbook_sync": handbook_sync(tmp / "a"),
                   "connector_listing": listing_only(tmp / "b", args.files, args.folders)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
