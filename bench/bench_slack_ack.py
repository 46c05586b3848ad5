"""Slack ack latency: N signed ``app_mention`` events against ``POST /slack/events``, C at a time.

    .venv/bin/python bench/bench_slack_ack.py                          # 500 events, 50 concurrent
    .venv/bin/python bench/bench_slack_ack.py --events 1000 --concurrency 100

What runs, each in its own process, as in production: Redis (the embedded redis-server), ``deskmate web`` and
``deskmate worker`` (the real entry points, configured by ``DESKMATE_*`` variables), and the local fake of
the Slack Web API (``tests/fakes/slack_api.py``) that receives the placeholders and answers. This process only
signs and sends the events, as Slack would (``X-Slack-Signature`` v0, fresh timestamp), and times each one
from sending the request to receiving the complete response: the ack Slack waits for (limit 3,000 ms).

Every event has its own id (and, by default, its own channel: no policy or channel-type cache hits, no
per-channel pacing), so every one is recorded, gets a placeholder and is answered by the worker while later
events are still arriving; the run ends when all answers were delivered (or a timeout).
The sample knowledge base is ingested into ``--data-dir`` on the first run (about a minute), then reused.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import hmac
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(os.environ.get("DESKMATE_SHARED_DIR", ROOT.parent / "shared")) / "fixtures" / "slack" / "app_mention.json"
SECRET = "bench-signing-secret"
QUESTIONS = ["How much is the daily meal allowance when I travel?", "How many days of annual leave do I get?",
             "The VPN is not working, what should I do?", "How do I report a phishing email?",
             "What is the home office stipend?", "How do I book travel?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_fake_slack(port: int) -> None:
    """Child process: the fake Slack Web API on ``port``."""
    sys.path.insert(0, str(ROOT))
    from tests.fakes import slack_api

    async def main() -> None:
        fake = slack_api.FakeSlack()
        fake.default_channel_kind = "public"
        await fake.start(port)
        await asyncio.Event().wait()

    asyncio.run(main())


def sign(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}", "Content-Type": "application/json"}


def event(template: dict[str, Any], i: int, run: str, channels: int = 0) -> str:
    body = copy.deepcopy(template)
    ts = f"{int(time.time())}.{i:06d}"
    body["event_id"] = f"EvBench{run}{i:06d}"
    body["event"].update(text=f"<@W111> {QUESTIONS[i % len(QUESTIONS)]}", channel=f"CBENCH{(i % channels) if channels else i:05d}", ts=ts,
                         event_ts=ts, user="W222")
    return json.dumps(body)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def wait_http(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


async def counts(session: aiohttp.ClientSession, slack_url: str) -> dict[str, int]:
    async with session.get(f"{slack_url}/_counts") as response:
        return await response.json()


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the lean client: write a prepared request, resolve ``waiter`` with
    the response's status once its headers and ``Content-Length`` bytes are in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length:]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(int(head[0].split()[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the web process closed the connection"))


def prepared(host: str, body: str) -> bytes:
    """A signed ``POST /slack/events`` as bytes on the wire."""
    raw = body.encode()
    headers = sign(body) | {"Host": host, "Content-Length": str(len(raw))}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST /slack/events HTTP/1.1\r\n{head}\r\n".encode() + raw


async def lean_send(web_url: str, bodies: list[str], concurrency: int) -> tuple[list[float], dict[int, int], float]:
    """The lean client: ``concurrency`` keep-alive connections opened and every request signed before the clock
    starts; then each connection sends its next request as soon as the previous one is answered. It times the
    web process, not the client (the aiohttp client's own cost: see the module docstring)."""
    loop = asyncio.get_running_loop()
    host_port = web_url.split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    requests = [prepared(host_port, body) for body in bodies]
    connections = [(await loop.create_connection(_Connection, host, int(port)))[1] for _ in range(concurrency)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pending = iter(requests)

    async def run(connection: _Connection) -> None:
        assert connection.transport is not None
        for request in pending:
            connection.waiter = loop.create_future()
            started = time.perf_counter()
            connection.transport.write(request)
            status = await connection.waiter
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(run(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return latencies, statuses, elapsed


async def aiohttp_send(web_url: str, bodies: list[str],
                       concurrency: int) -> tuple[list[float], dict[int, int], float]:
    """The aiohttp client, each request signed as it is sent (the bench's only client before issue 16's fifth
    round)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def send(body: str) -> None:
            async with semaphore:
                started = time.perf_counter()
                async with session.post(f"{web_url}/slack/events", data=body.encode(),
                                        headers=sign(body)) as response:
                    await response.read()
                    latencies.append((time.perf_counter() - started) * 1000)
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(send(body) for body in bodies))
        return latencies, statuses, time.perf_counter() - started


async def drive(web_url: str, slack_url: str, events: int, concurrency: int, warmup: int,
                web_pid: int, channels: int = 0, client: str = "lean") -> dict[str, Any]:
    template = json.loads(FIXTURE.read_text())
    run = str(int(time.time()))
    async with aiohttp.ClientSession() as session:
        for i in range(warmup):  # first request: bolt's auth.test, connection set-up
            body = event(template, 90000 + i, run, channels)
            async with session.post(f"{web_url}/slack/events", data=body.encode(), headers=sign(body)) as response:
                await response.read()
        await asyncio.sleep(2)  # let the warm-up answers finish, then measure the web process at rest
        idle_before = cpu_seconds(web_pid)
        await asyncio.sleep(3)
        idle_cpu_per_s = (cpu_seconds(web_pid) - idle_before) / 3
        before = await counts(session, slack_url)
        bodies = [event(template, i, run, channels) for i in range(events)]
        cpu_before = cpu_seconds(web_pid)
        started = time.perf_counter()
        sender = lean_send if client == "lean" else aiohttp_send
        latencies, statuses, send_s = await sender(web_url, bodies, concurrency)
        web_cpu_s = cpu_seconds(web_pid) - cpu_before  # acks and the intake work done meanwhile
        deadline = time.monotonic() + max(120, events * 0.5)
        delivered, placeholders = 0, {}
        while time.monotonic() < deadline:
            delivered, placeholders = await answered(session, slack_url, before, events, channels)
            if delivered >= events:
                break
            await asyncio.sleep(0.25)
        answered_s = time.perf_counter() - started
        web_cpu_total_s = cpu_seconds(web_pid) - cpu_before
    return {"latencies": latencies, "statuses": statuses, "send_s": send_s, "delivered": delivered,
            "answered_s": answered_s, "web_cpu_s": web_cpu_s, "web_cpu_total_s": web_cpu_total_s,
            "web_idle_cpu_per_s": idle_cpu_per_s, "placeholders": placeholders}


async def answered(session: aiohttp.ClientSession, slack_url: str, before: dict[str, int], events: int,
                   channels: int) -> tuple[int, dict[int, int]]:
    """Answers delivered so far, and how many events got how many placeholders. With a channel per event (the
    default) both are counted per event, so an event answered twice or not at all shows; with shared channels
    only the number of answers (``chat.update`` calls) is known."""
    if channels:
        now = await counts(session, slack_url)
        return now.get("chat.update", 0) - before.get("chat.update", 0), {}
    async with session.get(f"{slack_url}/_calls") as response:
        calls = await response.json()
    ours = {f"CBENCH{i:05d}" for i in range(events)}
    updated = {c["channel"] for c in calls if c["method"] == "chat.update" and c["ok"] and c["channel"] in ours}
    per_event: dict[str, int] = {}
    for call in calls:
        if call["method"] == "chat.postMessage" and call["ok"] and call["channel"] in ours:
            per_event[call["channel"]] = per_event.get(call["channel"], 0) + 1
    placeholders: dict[int, int] = {}
    for channel in ours:
        placeholders[per_event.get(channel, 0)] = placeholders.get(per_event.get(channel, 0), 0) + 1
    return len(updated), placeholders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels", type=int, default=0, help="distinct channels (0 = one per event)")
    parser.add_argument("--client", choices=("lean", "aiohttp"), default="lean",
                        help="lean: pre-opened connections, pre-signed requests (times the web process); "
                             "aiohttp: the aiohttp client (times the client too)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "deskmate-bench-slack")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from bot.core.settings import Settings
    from bot.redis_conn import embedded_socket, ensure_embedded_redis, stop_embedded_redis

    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    slack_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    env.update(DESKMATE_DATA_DIR=str(data_dir), DESKMATE_LOG_LEVEL="WARNING", DESKMATE_WEB_PORT=str(web_port),
               DESKMATE_SLACK_BOT_TOKEN="xoxb-bench", DESKMATE_SLACK_SIGNING_SECRET=SECRET,
               DESKMATE_SLACK_API_URL=f"http://127.0.0.1:{slack_port}/api/", ANONYMIZED_TELEMETRY="False",
               DESKMATE_REDIS_URL=f"unix://{embedded_socket(Settings(_env_file=None, data_dir=data_dir))}")  # type: ignore[call-arg]
    deskmate = str(Path(sys.executable).with_name("deskmate"))
    print(f"data dir {data_dir}; ingesting the sample knowledge base (incremental)…", flush=True)
    from bot.core.settings import SAMPLE_KNOWLEDGE_DIR

    subprocess.run([deskmate, "ingest", str(SAMPLE_KNOWLEDGE_DIR)], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)

    redis_proc = ensure_embedded_redis(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    import redis as redis_sync

    redis_sync.Redis.from_url(env["DESKMATE_REDIS_URL"]).flushall()
    fake = multiprocessing.get_context("spawn").Process(target=serve_fake_slack, args=(slack_port,), daemon=True)
    fake.start()
    web = subprocess.Popen([deskmate, "web"], env=env, cwd=ROOT)
    worker = subprocess.Popen([deskmate, "worker"], env=env, cwd=ROOT)
    try:
        asyncio.run(wait_http(f"http://127.0.0.1:{web_port}/healthz"))
        asyncio.run(wait_http(f"http://127.0.0.1:{slack_port}/_counts"))
        result = asyncio.run(drive(f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{slack_port}",
                                   args.events, args.concurrency, args.warmup, web.pid, args.channels,
                                   args.client))
    finally:
        for proc in (web, worker):
            proc.terminate()
        for proc in (web, worker):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        fake.terminate()
        stop_embedded_redis(redis_proc)

    lat = result["latencies"]
    print(f"\nSlack ack latency — {args.events} signed app_mention events, {args.concurrency} concurrent, "
          f"{args.client} client, web + worker + Redis running ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(f"  HTTP statuses      {result['statuses']}")
    print(f"  ack p50            {statistics.median(lat):7.1f} ms")
    print(f"  ack p90            {percentile(lat, 90):7.1f} ms")
    print(f"  ack p99            {percentile(lat, 99):7.1f} ms")
    print(f"  ack max            {max(lat):7.1f} ms")
    print(f"  events/s sent      {args.events / result['send_s']:7.1f}")
    busy = result["web_cpu_total_s"] - result["web_idle_cpu_per_s"] * result["answered_s"]
    print(f"  web CPU per event  {busy / args.events * 1000:7.1f} ms (ack + intake: claim, placeholder, record, "
          f"enqueue; the process's idle use, {result['web_idle_cpu_per_s'] * 100:.0f}% of a CPU, subtracted)")
    print(f"  answers delivered  {result['delivered']}/{args.events} in {result['answered_s']:.1f} s")
    if result["placeholders"]:
        print(f"  placeholders       {dict(sorted(result['placeholders'].items()))} (posted per event: events)")


if __name__ == "__main__":
    main()
