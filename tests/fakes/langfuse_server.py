"""A small local Langfuse: the endpoints the Python SDK (v5) talks to, recording what arrives.

Runs ``http.server`` on 127.0.0.1 in a thread, not on the test's event loop: the SDK sends from its own
background threads and ``flush()`` blocks the caller until the request is answered, so a receiver on the
caller's loop would deadlock. Every handler records before it responds, so after ``tracer.flush()`` the
data is already in ``.spans`` / ``.scores``.

Endpoints:
- ``POST /api/public/otel/v1/traces`` OTLP/HTTP traces, protobuf or JSON, gzip/deflate or plain
- ``POST /api/public/scores`` a score or a list of scores (the SDK batches a list), answered 202
- ``POST /api/public/ingestion`` the legacy batch endpoint (older SDKs send scores there), answered 207
- ``GET /api/public/health`` unauthenticated; ``GET /api/public/projects`` what ``auth_check()`` calls
- datasets: ``POST /api/public/v2/datasets`` (upsert by name), ``GET /api/public/v2/datasets[/{name}]``,
  ``POST /api/public/dataset-items`` (upsert by id; 404 for an unknown dataset),
  ``GET /api/public/dataset-items[/{id}]`` (``?datasetName=`` filters); kept in ``.datasets`` / ``.dataset_items``

Everything but health checks HTTP Basic auth against ``public_key:secret_key`` and answers 401 otherwise.

    with start_fake_langfuse() as fake:          # or: async with start_fake_langfuse() as fake:
        settings = Settings(langfuse_public_key=fake.public_key, langfuse_secret_key=fake.secret_key,
                            langfuse_host=fake.url)
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

OTLP_TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
INGESTION_PATH = "/api/public/ingestion"
DATASETS_PATH = "/api/public/v2/datasets"
DATASET_ITEMS_PATH = "/api/public/dataset-items"


@dataclass
class RecordedSpan:
    name: str
    trace_id: str  # 32 hex chars, as Langfuse shows it
    span_id: str  # 16 hex chars
    parent_span_id: str | None
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    scope: str
    scope_attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1_000_000

    def json_attribute(self, key: str) -> Any:
        """An attribute the SDK JSON-encodes (input, output, usage and cost details, metadata values)."""
        value = self.attributes.get(key)
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class RecordedRequest:
    method: str
    path: str
    authorized: bool
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A port nothing listens on (bound, then released), to stand in for a Langfuse that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeLangfuse:
    def __init__(self, *, public_key: str | None = None, secret_key: str | None = None) -> None:
        # Random keys by default: the SDK caches per public key for the whole process.
        suffix = uuid.uuid4().hex[:12]
        self.public_key = public_key or f"pk-lf-test-{suffix}"
        self.secret_key = secret_key or f"sk-lf-test-{suffix}"
        self.spans: list[RecordedSpan] = []
        self.scores: list[dict[str, Any]] = []
        self.ingestion_events: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self.datasets: dict[str, dict[str, Any]] = {}  # by name, as the API returns them
        self.dataset_items: dict[str, dict[str, Any]] = {}  # by id
        #: Answer every authenticated ingestion request with this status instead (e.g. 503 for an outage).
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Langfuse is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeLangfuse:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-langfuse",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLangfuse:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FakeLangfuse:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # --- queries -------------------------------------------------------------------------------------
    def spans_named(self, name: str) -> list[RecordedSpan]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def span(self, name: str, trace_id: str | None = None) -> RecordedSpan:
        """The one span called ``name`` (in ``trace_id``, if given); fails if there are none or several."""
        found = [s for s in self.spans_named(name) if trace_id is None or s.trace_id == trace_id]
        if len(found) != 1:
            names = [s.name for s in self.spans]
            raise AssertionError(f"expected one span {name!r}, got {len(found)}; all spans: {names}")
        return found[0]

    def trace(self, trace_id: str) -> list[RecordedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    @property
    def unauthorized(self) -> int:
        with self._lock:
            return sum(not r.authorized for r in self.requests)

    # --- recording (called from handler threads) ----------------------------------------------------
    def _record_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _record_spans(self, spans: list[RecordedSpan]) -> None:
        with self._lock:
            self.spans.extend(spans)

    def _record_scores(self, scores: list[dict[str, Any]]) -> None:
        with self._lock:
            self.scores.extend(scores)

    def items_of(self, dataset_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [i for i in self.dataset_items.values() if i["datasetName"] == dataset_name]

    def _upsert_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        with self._lock:
            existing = self.datasets.get(body["name"])
            dataset = existing or {"id": f"ds-{uuid.uuid4().hex[:12]}", "name": body["name"], "projectId": "fake-project",
                                   "createdAt": now}
            dataset.update({"description": body.get("description"), "metadata": body.get("metadata"),
                            "inputSchema": body.get("inputSchema"), "expectedOutputSchema": body.get("expectedOutputSchema"),
                            "updatedAt": now})
            self.datasets[body["name"]] = dataset
            return dict(dataset)

    def _upsert_item(self, body: dict[str, Any]) -> dict[str, Any] | None:
        now = _now()
        with self._lock:
            dataset = self.datasets.get(body.get("datasetName", ""))
            if dataset is None:
                return None
            item_id = body.get("id") or uuid.uuid4().hex
            item = self.dataset_items.get(item_id) or {"id": item_id, "createdAt": now}
            item.update({"status": body.get("status") or "ACTIVE", "input": body.get("input"),
                         "expectedOutput": body.get("expectedOutput"), "metadata": body.get("metadata"),
                         "sourceTraceId": body.get("sourceTraceId"), "sourceObservationId": body.get("sourceObservationId"),
                         "datasetId": dataset["id"], "datasetName": dataset["name"], "updatedAt": now,
                         "mediaReferences": []})
            self.dataset_items[item_id] = item
            return dict(item)

    def _record_events(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.ingestion_events.extend(events)
            self.scores.extend(e.get("body", {}) for e in events if e.get("type") == "score-create")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": data, "meta": {"page": 1, "limit": max(1, len(data)), "totalItems": len(data), "totalPages": 1}}


def start_fake_langfuse(*, public_key: str | None = None, secret_key: str | None = None) -> FakeLangfuse:
    """A fake Langfuse, started by ``with`` / ``async with`` (or ``.start()``) and stopped on exit."""
    return FakeLangfuse(public_key=public_key, secret_key=secret_key)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeLangfuse
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pooled clients expect

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request stderr lines
        pass

    # --- plumbing ------------------------------------------------------------------------------------
    def _authorized(self) -> bool:
        expected = base64.b64encode(f"{self.owner.public_key}:{self.owner.secret_key}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def _body(self) -> bytes:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
        return raw

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _start(self) -> bool:
        """Record the request; answer 401 / the injected failure and return False when it stops here."""
        authorized = self._authorized()
        self.owner._record_request(
            RecordedRequest(
                method=self.command,
                path=self.path,
                authorized=authorized,
                content_type=self.headers.get("Content-Type", ""),
                headers={k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"},
            )
        )
        if not authorized:
            self._body()  # drain it, so the keep-alive connection stays usable
            self._send_json(401, {"message": "Invalid credentials. Confirm the host and keys."})
            return False
        if self.owner.fail_with is not None:
            self._body()
            self._send_json(self.owner.fail_with, {"message": "injected failure"})
            return False
        return True

    # --- routes --------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/api/public/health":
            self._send_json(200, {"status": "OK", "version": "fake"})
        elif path == "/api/public/projects":
            if self._start():
                self._send_json(200, {"data": [{"id": "fake-project", "name": "Fake", "metadata": {}}]})
        elif path.startswith((DATASETS_PATH, DATASET_ITEMS_PATH)):
            if self._start():
                self._get_dataset_resource(path)
        else:
            self._send_json(404, {"message": "not found"})

    def _get_dataset_resource(self, path: str) -> None:
        from urllib.parse import parse_qs, unquote, urlsplit

        owner = self.owner
        if path == DATASETS_PATH:
            with owner._lock:
                self._send_json(200, _page(list(owner.datasets.values())))
        elif path.startswith(DATASETS_PATH + "/"):
            with owner._lock:
                dataset = owner.datasets.get(unquote(path[len(DATASETS_PATH) + 1:]))
            self._send_json(200, dataset) if dataset else self._send_json(404, {"message": "Dataset not found"})
        elif path == DATASET_ITEMS_PATH:
            wanted = parse_qs(urlsplit(self.path).query).get("datasetName", [None])[0]
            with owner._lock:
                items = [i for i in owner.dataset_items.values() if wanted is None or i["datasetName"] == wanted]
            self._send_json(200, _page(items))
        else:
            with owner._lock:
                item = owner.dataset_items.get(unquote(path[len(DATASET_ITEMS_PATH) + 1:]))
            self._send_json(200, item) if item else self._send_json(404, {"message": "Dataset item not found"})

    def _post_dataset_resource(self, path: str, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        if path == DATASETS_PATH:
            if not isinstance(payload.get("name"), str) or not payload["name"]:
                self._send_json(400, {"message": "name is required"})
                return
            self._send_json(200, self.owner._upsert_dataset(payload))
            return
        item = self.owner._upsert_item(payload)
        if item is None:
            self._send_json(404, {"message": f"Dataset {payload.get('datasetName')!r} not found"})
        else:
            self._send_json(200, item)

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path in (DATASETS_PATH, DATASET_ITEMS_PATH):
            if self._start():
                self._post_dataset_resource(path, self._body())
            return
        if path not in (OTLP_TRACES_PATH, SCORES_PATH, INGESTION_PATH):
            self._body()
            self._send_json(404, {"message": "not found"})
            return
        if not self._start():
            return
        body = self._body()
        if path == OTLP_TRACES_PATH:
            self._traces(body)
        elif path == SCORES_PATH:
            payload = json.loads(body or b"[]")
            self.owner._record_scores(payload if isinstance(payload, list) else [payload])
            self._send_json(202, {"message": "Accepted"})
        else:
            events = json.loads(body or b"{}").get("batch", [])
            self.owner._record_events(events)
            successes = [{"id": e.get("id"), "status": 201} for e in events]
            self._send_json(207, {"successes": successes, "errors": []})

    def _traces(self, body: bytes) -> None:
        is_json = "json" in self.headers.get("Content-Type", "")
        request = ExportTraceServiceRequest()
        try:
            if is_json:
                text = _otlp_json_ids_to_base64(body.decode())
                json_format.Parse(text, request, ignore_unknown_fields=True)
            else:
                request.ParseFromString(body)
        except Exception as exc:  # a malformed export is a test failure worth seeing in the response
            self._send_json(400, {"message": f"cannot decode OTLP request: {exc}"})
            return
        self.owner._record_spans(_spans_of(request))
        if is_json:
            self._send(200, b"{}")
        else:
            self._send(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


# --- OTLP decoding -----------------------------------------------------------------------------------
_HEX_ID_FIELD = re.compile(r'"(traceId|spanId|parentSpanId)"\s*:\s*"([0-9a-fA-F]*)"')


def _otlp_json_ids_to_base64(text: str) -> str:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects bytes as base64."""

    def convert(match: re.Match[str]) -> str:
        return f'"{match.group(1)}": "{base64.b64encode(bytes.fromhex(match.group(2))).decode()}"'

    return _HEX_ID_FIELD.sub(convert, text)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _spans_of(request: ExportTraceServiceRequest) -> list[RecordedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    RecordedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        attributes=_attributes(span.attributes),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        scope=scope_spans.scope.name,
                        scope_attributes=_attributes(scope_spans.scope.attributes),
                        resource=resource,
                        status_code=span.status.code,
                    )
                )
    return spans
