"""Deskmate scaled out on one machine: Postgres, a Chroma server, one Redis, N web and M worker processes.

Everything runs on 127.0.0.1 as real processes started the way a deployment starts them (``deskmate web``,
``deskmate worker``, ``chroma run``, Debian's ``postgresql`` binaries); only the LLM is the local fake Messages
API from the tests, answering after a fixed latency. ``tests/test_scale_out.py`` uses :class:`Cluster` to prove
exactly-once answering, kill-switch / rollback across processes and recovery from a killed worker. Run directly,
this measures throughput against the number of workers::

    .venv/bin/python bench/scale_out.py --workers 1,2 --questions 60 --llm-latency 2 --max-jobs 20

Postgres as root: the cluster is created and run as the ``postgres`` user (``runuser``), in a temporary
directory it owns; as any other user, as that user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import secrets
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.redis_server import RedisServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE = REPO / "knowledge" / "sample"
DASHBOARD_TOKEN = "scale-out-dashboard-token"


def _bin(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def postgres_bin_dir() -> Path:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL not found: `apt-get install -y postgresql` (scripts/setup.sh --test does)")


class Postgres:
    """A throwaway cluster: ``initdb`` into a temp dir, ``pg_ctl start`` on a free port, one database."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="deskmate-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://deskmate@127.0.0.1:{self.port}/deskmate"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd=self.dir)

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "deskmate", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", options, "start")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="deskmate", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE deskmate")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0  # web: HTTP; worker: /metrics

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_lines(self) -> list[dict[str, Any]]:
        """The process's JSON log lines (other lines, e.g. a traceback, are skipped)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def handled(self) -> set[int]:
        """Interaction ids this worker started answering."""
        return {ln["interaction_id"] for ln in self.log_lines() if ln.get("event") == "pipeline.start"}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=15)


@dataclass
class Cluster:
    """Services plus ``deskmate`` processes; build it with :func:`start_cluster`."""

    root: Path
    env: dict[str, str]
    postgres: Postgres
    redis: RedisServer
    chroma: Proc
    webs: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: interaction id -> its conversation's token, which the chat API needs to read the answer back
    conversations: dict[int, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def spawn(self, name: str, args: list[str], **env: str) -> Proc:
        log_path = self.root / f"{name}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed with the process
        popen = subprocess.Popen([_bin("deskmate"), *args], env={**self.env, **env}, stdout=log_file,
                                 stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        log_file.close()
        return Proc(name, popen, log_path, int(env.get("DESKMATE_WEB_PORT") or env.get("DESKMATE_WORKER_METRICS_PORT")
                                                   or 0))

    def start_web(self) -> Proc:
        port = free_port()
        proc = self.spawn(f"web{len(self.webs) + 1}", ["web"], DESKMATE_WEB_PORT=str(port))
        self.webs.append(proc)
        return proc

    def start_worker(self) -> Proc:
        proc = self.spawn(f"worker{len(self.workers) + 1}", ["worker"], DESKMATE_WORKER_METRICS_PORT=str(free_port()))
        self.workers.append(proc)
        return proc

    def url(self, web: Proc) -> str:
        return f"http://127.0.0.1:{web.port}"

    async def wait_ready(self, timeout_s: float = 180) -> None:
        """Every web process answers /readyz and every worker logged ``worker.ready``."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=5) as client:
            pending_webs, pending_workers = list(self.webs), list(self.workers)
            while pending_webs or pending_workers:
                for proc in pending_webs + pending_workers:
                    if not proc.alive:
                        raise RuntimeError(f"{proc.name} exited:\n{proc.log_path.read_text()[-3000:]}")
                for web in list(pending_webs):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(self.url(web) + "/readyz")).status_code == 200:
                            pending_webs.remove(web)
                for worker in list(pending_workers):
                    if any(ln.get("event") == "worker.ready" for ln in worker.log_lines()):
                        pending_workers.remove(worker)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not ready: {[p.name for p in pending_webs + pending_workers]}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        for proc in self.webs + self.workers:
            proc.kill(signal.SIGTERM)
            proc.kill(signal.SIGKILL)
        self.chroma.kill(signal.SIGTERM)
        self.chroma.kill(signal.SIGKILL)
        self.redis.stop()
        self.postgres.stop()


def base_env(root: Path, *, redis_url: str, database_url: str, chroma_url: str, llm_url: str,
             **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    env.update({
        "ANONYMIZED_TELEMETRY": "False", "PYTHONUNBUFFERED": "1",
        "DESKMATE_ENVIRONMENT": "production",  # JSON logs, as deployed
        "DESKMATE_USER_HASH_SALT": secrets.token_hex(32),  # production refuses the development salt
        "DESKMATE_DATA_DIR": str(root / "data"),  # BM25 files and index manifests: a shared volume in production
        "DESKMATE_DATABASE_URL": database_url, "DESKMATE_REDIS_URL": redis_url, "DESKMATE_CHROMA_URL": chroma_url,
        "DESKMATE_ANTHROPIC_API_KEY": "sk-scale-out", "DESKMATE_ANTHROPIC_BASE_URL": llm_url,
        "DESKMATE_LLM_MAX_RETRIES": "0", "DESKMATE_LLM_TIMEOUT_S": "60", "DESKMATE_DASHBOARD_TOKEN": DASHBOARD_TOKEN,
        "DESKMATE_GATE_ENABLED": "false", "DESKMATE_EMBEDDING_THREADS": "1", "DESKMATE_WORKER_POLL_DELAY_S": "0.05",
        "DESKMATE_WEB_HOST": "127.0.0.1",
        # the chat API is the load generator: on in production with the dashboard token, every source as before
        "DESKMATE_LOCAL_CHAT": "on", "DESKMATE_LOCAL_CHAT_SOURCES": "all",
    })
    env.update({f"DESKMATE_{k.upper()}": str(v) for k, v in extra.items()})
    return env


async def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def start_cluster(root: Path, llm_url: str, *, webs: int = 2, workers: int = 2, knowledge: Path = SAMPLE,
                        **settings: Any) -> AsyncIterator[Cluster]:
    """Postgres + Chroma server + Redis, ``knowledge`` ingested, then ``webs`` + ``workers`` processes.

    ``settings`` become ``DESKMATE_*`` variables of every process (``worker_max_jobs=20`` and so on).
    """
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    postgres, redis = Postgres(), RedisServer()
    chroma_port = free_port()
    chroma_log = root / "chroma.log"
    with open(chroma_log, "wb") as log_file:
        chroma = Proc("chroma", subprocess.Popen(
            [_bin("chroma"), "run", "--path", str(root / "chroma"), "--host", "127.0.0.1", "--port", str(chroma_port)],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            start_new_session=True), chroma_log, chroma_port)
    env = base_env(root, redis_url=redis.url, database_url=postgres.url, chroma_url=f"http://127.0.0.1:{chroma_port}",
                   llm_url=llm_url, **settings)
    cluster = Cluster(root=root, env=env, postgres=postgres, redis=redis, chroma=chroma)
    try:
        redis.start()
        await asyncio.to_thread(postgres.start)
        await wait_http(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat")
        cluster.timings["services_s"] = round(time.perf_counter() - t0, 1)
        # the schema first, from one process: processes starting together on an empty database would race
        from feedback.db import migrate

        await asyncio.to_thread(migrate, postgres.url)
        # every process starts while the handbook is ingested into the Chroma server: a worker loads the index
        # at its first question if it was not there at start (and /readyz waits for it)
        ingest = subprocess.Popen([_bin("deskmate"), "ingest", str(knowledge), "--kb", "default"], env=env, cwd=root,
                                  stdout=open(root / "ingest.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        for _ in range(webs):
            cluster.start_web()
        for _ in range(workers):
            cluster.start_worker()
        if await asyncio.to_thread(ingest.wait) != 0:
            raise RuntimeError("ingest failed:\n" + (root / "ingest.log").read_text()[-3000:])
        cluster.timings["ingested_s"] = round(time.perf_counter() - t0, 1)
        await cluster.wait_ready()
        cluster.timings["ready_s"] = round(time.perf_counter() - t0, 1)
        yield cluster
    finally:
        cluster.stop()


# --- the throughput benchmark ---------------------------------------------------------------------------
QUESTIONS = [
    "How much is the meal per diem when I travel?", "How do I connect to the VPN?",
    "How many days of annual leave do I get?", "Who approves my expense report?",
    "How do I reset my password?", "Can I work from another country?", "When is payday?",
    "What is the parental leave policy?",
]


#: The chat API in production: the dashboard token signs in (bot/local_chat/access.py).
AUTH = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}


async def ask_all(cluster: Cluster, n: int, *, tag: str, questions: list[str] = QUESTIONS) -> list[int]:
    """Submit ``n`` questions round-robin over the web processes' chat API, each in a new conversation (its
    token kept in ``cluster.conversations``); returns interaction ids.

    Each question ends with a unique ``(tag-i)``, so LLM requests can be matched to questions.
    """
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=50), headers=AUTH) as client:
        async def ask(i: int) -> int:
            web = cluster.webs[i % len(cluster.webs)]
            r = await client.post(cluster.url(web) + "/chat/api/ask",
                                  json={"text": f"{questions[i % len(questions)]} ({tag}-{i})"})
            r.raise_for_status()
            interaction_id = int(r.json()["interaction_id"])
            cluster.conversations[interaction_id] = str(r.json()["conversation"])
            return interaction_id

        return list(await asyncio.gather(*(ask(i) for i in range(n))))


async def wait_all_final(cluster: Cluster, ids: list[int], timeout_s: float = 600) -> list[dict[str, Any]]:
    """Poll the chat API (any web process) until every interaction is final."""
    deadline = time.monotonic() + timeout_s
    done: dict[int, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
        while len(done) < len(ids):
            for k, iid in enumerate(i for i in ids if i not in done):
                web = cluster.webs[k % len(cluster.webs)]
                view = (await client.get(f"{cluster.url(web)}/chat/api/interactions/{iid}",
                                         headers={"X-Deskmate-Conversation": cluster.conversations[iid]})).json()
                if view.get("status") not in (None, "pending"):
                    done[iid] = view
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - len(done)} questions not answered")
            await asyncio.sleep(0.2)
    return [done[i] for i in ids]


async def measure(cluster: Cluster, n: int, tag: str) -> dict[str, Any]:
    started = time.perf_counter()
    ids = await ask_all(cluster, n, tag=tag)
    views = await wait_all_final(cluster, ids)
    wall = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for v in views:
        statuses[v["status"]] = statuses.get(v["status"], 0) + 1
    asked = set(ids)
    return {"questions": n, "statuses": statuses, "wall_s": round(wall, 1), "answers_per_s": round(n / wall, 2),
            "answers_per_min": round(60 * n / wall), "per_worker": {w.name: len(w.handled() & asked)
                                                                    for w in cluster.workers}}


async def bench(args: argparse.Namespace) -> None:
    """One cluster; the workers are added one at a time and the same load is measured at each count."""
    from tests.fakes.anthropic_server import Reply, start_fake_anthropic

    counts = sorted(int(w) for w in args.workers.split(","))
    async with start_fake_anthropic() as llm:
        llm.always(Reply.answer(delay_s=args.llm_latency))
        root = Path(tempfile.mkdtemp(prefix="deskmate-scale-"))
        async with start_cluster(root, llm.url, webs=args.webs, workers=counts[0], knowledge=args.knowledge,
                                 worker_max_jobs=args.max_jobs, job_timeout_s=max(120, 10 * args.llm_latency)) as cluster:
            print(json.dumps({"startup_s": cluster.timings}), flush=True)
            await measure(cluster, 2 * len(cluster.workers), "warm")
            for count in counts:
                while len(cluster.workers) < count:
                    cluster.start_worker()
                await cluster.wait_ready()
                await measure(cluster, 2 * count, f"warm{count}")  # each new worker loads the index
                result = await measure(cluster, args.questions, f"w{count}")
                print(json.dumps({"webs": args.webs, "workers": count, "max_jobs": args.max_jobs,
                                  "llm_latency_s": args.llm_latency, "load_avg_1m": round(os.getloadavg()[0], 1),
                                  **result}), flush=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--webs", type=int, default=2)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--llm-latency", type=float, default=2.0)
    parser.add_argument("--max-jobs", type=int, default=20, help="answers in flight per worker (arq max_jobs)")
    parser.add_argument("--knowledge", type=Path, default=SAMPLE, help="folder to ingest (default: the sample)")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()

