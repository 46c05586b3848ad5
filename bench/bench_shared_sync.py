"""A first sync with its embedding shared among workers (issue 15): documents/s and chunks/s with the syncing
process alone, with one `deskmate worker` helping, and with two; then a re-sync with nothing changed.

    .venv/bin/python bench/bench_shared_sync.py [--copies 2] [--threads 0,1]

The corpus is the bundled sample handbook, ``--copies`` times, each copy a distinct "regional edition" (a line
added to every file; identical files would be skipped as duplicates), as one folder source. This process syncs (as
``deskmate source sync`` does, ``playbooks.sources.run_sync``); the workers are real ``deskmate worker``
processes on a real redis-server, each taking the helper job (``bot/embed_jobs.py``). ``--threads`` sets
``DESKMATE_EMBEDDING_THREADS`` for every process, per round (0 = onnxruntime's one thread per core: on a
2-core machine two processes embedding at once then share the same cores). Every run starts from an empty index.
Prints one line per run and a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import stop  # noqa: E402
from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings  # noqa: E402
from bot.embed_jobs import shared_embedding  # noqa: E402
from feedback.db import get_database  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.connectors.config import parse_sources  # noqa: E402
from knowledge.index import IndexStore  # noqa: E402
from playbooks.sources import embed_alone, run_sync  # noqa: E402
from tests.fakes.redis_server import free_port, start_redis_server  # noqa: E402

BIN = Path(sys.executable).parent
METRIC = "deskmate_worker_embedding_batches_total"


def worker_env(root: Path, redis_url: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    env.update({"DESKMATE_DATA_DIR": str(root / "worker-data"), "DESKMATE_REDIS_URL": redis_url,
                "DESKMATE_DATABASE_URL": f"sqlite:///{root / 'worker.db'}", "DESKMATE_SOURCES_SCHEDULER": "false",
                "DESKMATE_EMBEDDING_THREADS": str(threads), "DESKMATE_WORKER_POLL_DELAY_S": "0.05"})
    return env


@contextlib.contextmanager
def workers(n: int, root: Path, redis_url: str, threads: int) -> Iterator[list[int]]:
    """``n`` running ``deskmate worker`` processes; yields their metrics ports once each answers /readyz."""
    procs, ports = [], []
    env = worker_env(root, redis_url, threads)
    try:
        for i in range(n):
            port = free_port()
            log = open(root / f"worker{i}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen([str(BIN / "deskmate"), "worker"],
                                          env={**env, "DESKMATE_WORKER_METRICS_PORT": str(port)},
                                          stdout=log, stderr=subprocess.STDOUT, cwd=root))
            log.close()
            ports.append(port)
        deadline = time.monotonic() + 180
        for i, port in enumerate(ports):
            while True:
                if procs[i].poll() is not None:
                    raise RuntimeError(f"worker {i} exited: {(root / f'worker{i}.log').read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("a worker did not start; see its log in " + str(root))
                time.sleep(0.2)
        yield ports
    finally:
        for proc in procs:
            stop(proc)


def helped(ports: list[int]) -> list[int]:
    counts = []
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        line = next((ln for ln in text.splitlines() if ln.startswith(METRIC + " ")), f"{METRIC} 0")
        counts.append(int(float(line.split()[1])))
    return counts


def run(corpus: Path, root: Path, redis_url: str, n_workers: int, threads: int) -> dict[str, object]:
    settings = Settings(_env_file=None, data_dir=root / "data", redis_url=redis_url,  # type: ignore[call-arg]
                        database_url=f"sqlite:///{root / 'sync.db'}", embedding_threads=threads)
    get_database(settings.database_url_resolved()).migrate()
    sources = parse_sources([{"name": "handbook", "kind": "folder", "path": str(corpus)}])
    embedding = partial(shared_embedding, settings) if n_workers else embed_alone
    with workers(n_workers, root, redis_url, threads) as ports:
        started = time.perf_counter()
        result = run_sync(settings, sources[0], sources, embedding=embedding)
        seconds = time.perf_counter() - started
        by_workers = helped(ports)
        again_started = time.perf_counter()
        again = run_sync(settings, sources[0], sources, embedding=embedding)
        again_s = time.perf_counter() - again_started
    assert result.status == "ok" and result.created_version, result.errors
    assert again.status == "unchanged" or not again.created_version
    docs = len(result.added)
    latest = IndexStore(KnowledgeConfig.from_settings(settings)).manifest(result.kb).latest
    assert latest is not None
    chunks = int(latest["chunk_count"])
    return {"workers": n_workers, "threads": threads, "documents": docs, "chunks": chunks,
            "seconds": round(seconds, 1), "documents_per_s": round(docs / seconds, 2),
            "chunks_per_s": round(chunks / seconds, 1),
            "batches_by_each_worker": by_workers, "resync_unchanged_s": round(again_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--threads", default="0,1")
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="deskmate-bench-") as tmp_name, start_redis_server() as redis:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        for i in range(args.copies):
            shutil.copytree(SAMPLE_KNOWLEDGE_DIR, corpus / f"copy{i}")
            for path in (corpus / f"copy{i}").rglob("*.md"):  # a distinct edition: identical files are skipped
                path.write_text(path.read_text() + f"\n\nRegional edition {i + 1}.\n")
        for threads in (int(t) for t in args.threads.split(",")):
            for n in (int(w) for w in args.workers.split(",")):
                root = tmp / f"t{threads}-w{n}"
                root.mkdir()
                line = run(corpus, root, redis.url, n, threads)
                print(f"threads={threads} workers={n}: {line['documents']} documents, {line['chunks']} chunks in "
                      f"{line['seconds']} s = {line['documents_per_s']} documents/s, {line['chunks_per_s']} chunks/s;"
                      f" batches by each worker {line['batches_by_each_worker']}; re-sync unchanged "
                      f"{line['resync_unchanged_s']} s", flush=True)
                results.append(line)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
