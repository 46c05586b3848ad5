"""Source sync throughput: the bundled sample handbook as a git source and as a folder source, synced into a
fresh index (documents/s, chunks/s), re-synced with nothing changed, and re-synced after one commit.

    .venv/bin/python -m bench.bench_sources [--copies N]

``--copies`` repeats the handbook N times (in sub-folders) for a larger corpus. One process, one sync at a time
(the embedding is the cost; see docs/benchmarks.md for the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        for i in range(args.copies):
            shutil.copytree(SAMPLE_KNOWLEDGE_DIR, repo / f"copy{i}")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", "handbook")
        results = {}
        for kind in ("git", "folder"):
            store = IndexStore(KnowledgeConfig(index_dir=tmp / kind / "index", chroma_dir=tmp / kind / "chroma"))
            spec = ({"name": "hb", "kind": "git", "repository": str(repo)} if kind == "git"
                    else {"name": "hb", "kind": "folder", "path": str(repo)})
            (source,) = parse_sources([spec])
            store.embedder.embed(["warm up"])  # model load is not sync time
            t0 = time.perf_counter()
            first = sync_source(store, source, [source], work_root=tmp / kind / "work", default_kb="b")
            first_s = time.perf_counter() - t0
            chunks = int(store.manifest("b").latest["chunk_count"])  # type: ignore[index]
            t0 = time.perf_counter()
            again = sync_source(store, source, [source], work_root=tmp / kind / "work", default_kb="b")
            again_s = time.perf_counter() - t0
            page = next(p for p in sorted(repo.rglob("*.md")) if ".git" not in p.parts)
            page.write_text(page.read_text() + f"\n\nEdited for the {kind} benchmark.\n")
            git(repo, "commit", "-q", "-am", f"edit for {kind}")
            t0 = time.perf_counter()
            one = sync_source(store, source, [source], work_root=tmp / kind / "work", default_kb="b")
            one_s = time.perf_counter() - t0
            results[kind] = {
                "documents": len(first.added), "chunks": chunks, "first_sync_s": round(first_s, 1),
                "documents_per_s": round(len(first.added) / first_s, 2), "chunks_per_s": round(chunks / first_s, 1),
                "resync_unchanged_s": round(again_s, 2), "resync_status": again.status,
                "resync_one_changed_s": round(one_s, 2), "one_changed_updated": len(one.updated),
            }
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
