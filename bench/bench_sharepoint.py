"""SharePoint source sync against the local Graph fake (tests/fakes/graph_api.py, HTTPS on 127.0.0.1): the bundled
sample handbook uploaded to a document library (``--copies`` times), synced into a fresh index (documents/s,
chunks/s, Graph requests), re-synced with nothing changed (requests, downloads), and re-synced after one edit.

    .venv/bin/python -m bench.bench_sharepoint [--copies N] [--page-size N]

The network is loopback: the figures are the connector's and the index's cost, not Microsoft's latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.connectors.config import parse_sources  # noqa: E402
from knowledge.connectors.sync import SyncResult, sync_source  # noqa: E402
from knowledge.index import IndexStore  # noqa: E402
from tests.fakes.graph_api import CLIENT_ID, CLIENT_SECRET, TENANT_ID, Item, start_fake_graph  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--page-size", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, start_fake_graph(Path(tmp_name) / "tls") as graph:
        tmp = Path(tmp_name)
        graph.page_size = args.page_size
        site = graph.add_site("acme.sharepoint.com", "/sites/Handbook", "Handbook")
        docs = graph.add_drive(site, "Documents")
        files: list[Item] = []
        for copy in range(args.copies):
            top = graph.add_folder(docs, f"copy{copy}")
            folders: dict[Path, Item] = {Path("."): top}
            for path in sorted(Path(SAMPLE_KNOWLEDGE_DIR).rglob("*")):
                rel = path.relative_to(SAMPLE_KNOWLEDGE_DIR)
                if path.is_dir():
                    folders[rel] = graph.add_folder(docs, path.name, parent=folders[rel.parent])
                elif path.is_file():
                    content = path.read_bytes() + (f"\n\n(Copy {copy} of the handbook.)\n".encode() if copy else b"")
                    files.append(graph.add_file(docs, path.name, content, parent=folders[rel.parent]))
        (source,) = parse_sources([{
            "name": "hb", "kind": "sharepoint", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
            "client_secret_env": "SECRET", "site": "acme.sharepoint.com:/sites/Handbook", "pages": False,
            "authority_url": graph.authority_url, "graph_url": graph.graph_url, "ca_file": str(graph.ca_file)}])
        environ = {"SECRET": CLIENT_SECRET}
        store = IndexStore(KnowledgeConfig(index_dir=tmp / "index", chroma_dir=tmp / "chroma"))
        store.embedder.embed(["warm up"])  # model load is not sync time

        def run() -> tuple[float, int, int, SyncResult]:
            graph.requests.clear()
            t0 = time.perf_counter()
            result = sync_source(store, source, [source], work_root=tmp / "work", default_kb="b", environ=environ)
            seconds = time.perf_counter() - t0
            return seconds, len(graph.served("/v1.0/")), len(graph.served("/_download/")), result

        first_s, first_calls, first_downloads, first = run()
        chunks = int(store.manifest("b").latest["chunk_count"])  # type: ignore[index]
        again_s, again_calls, again_downloads, again = run()
        graph.edit(files[0], files[0].content + b"\n\nEdited for the benchmark.\n")
        one_s, one_calls, one_downloads, one = run()
        added = len(first.added)
        print(json.dumps({
            "files": len(files), "documents": added, "chunks": chunks, "delta_page_size": args.page_size,
            "first_sync_s": round(first_s, 1), "documents_per_s": round(added / first_s, 2),
            "chunks_per_s": round(chunks / first_s, 1), "first_graph_calls": first_calls,
            "first_downloads": first_downloads,
            "resync_unchanged_s": round(again_s, 2), "resync_status": again.status,
            "resync_graph_calls": again_calls, "resync_downloads": again_downloads,
            "resync_one_changed_s": round(one_s, 2), "one_changed_updated": len(one.updated),
            "one_changed_graph_calls": one_calls, "one_changed_downloads": one_downloads,
        }, indent=1))


if __name__ == "__main__":
    main()
