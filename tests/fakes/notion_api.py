"""A local fake of the Notion REST API (version 2026-03-11), spoken over real HTTP on 127.0.0.1.

Point a ``notion`` source's ``api_url`` at ``fake.url``. It answers, with Notion's JSON shapes:

- ``POST /v1/search`` — pages or data sources (``filter: {"property": "object", "value": "page"|"data_source"}``),
  sorted by ``last_edited_time``, paginated (``start_cursor``, ``page_size`` ≤ 100, ``has_more``,
  ``next_cursor``; ``fake.max_per_response`` answers fewer than asked, as Notion may). Trashed pages are
  returned with ``in_trash: true``; unshared ones are not returned at all.
- ``POST /v1/data_sources/{id}/query`` — a database's rows (not trashed), paginated the same way.
- ``GET /v1/blocks/{id}/children`` — a page's or block's children (``page_size``/``start_cursor`` query
  parameters); ``GET /v1/blocks/{id}``, ``GET /v1/pages/{id}``.
- Errors as ``{"object": "error", "status", "code", "message", "request_id"}``: 401 ``unauthorized`` for a
  wrong bearer token, 400 ``missing_version`` / ``validation_error``, 404 ``object_not_found`` for anything not
  shared with the integration, 429 ``rate_limited`` with ``Retry-After`` (``fake.rate_limit(...)``).

The model is mutable between syncs: ``add_page``, ``add_database``, ``edit``, ``trash``, ``unshare``. Every
request is recorded in ``fake.requests``.

    with start_fake_notion(token="secret") as notion:
        root = notion.add_page("Handbook", blocks=[h1("Travel"), para("Book trains, not planes.")])
        notion.rate_limit("/v1/search", retry_after=2)
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_server import serving

VERSION = "2026-03-11"
USER = {"object": "user", "id": "6e1bd1c4-0d5e-4f4a-9c1e-2a1f0b5e7c11"}


def text(content: str, *, bold: bool = False, italic: bool = False, code: bool = False,
         strikethrough: bool = False, link: str | None = None) -> dict[str, Any]:
    """A rich text item."""
    return {"type": "text", "text": {"content": content, "link": {"url": link} if link else None},
            "annotations": {"bold": bold, "italic": italic, "strikethrough": strikethrough, "underline": False,
                            "code": code, "color": "default"},
            "plain_text": content, "href": link}


def _rich(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [text(value)] if isinstance(value, str) else value


def block(kind: str, body: dict[str, Any] | None = None, children: list[dict[str, Any]] | None = None
          ) -> dict[str, Any]:
    """A block to store (ids, parents and ``has_children`` are filled in by the fake)."""
    return {"type": kind, kind: body or {}, "_children": children or []}


def para(value: str | list[dict[str, Any]], children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return block("paragraph", {"rich_text": _rich(value), "color": "default"}, children)


def heading(level: int, value: str) -> dict[str, Any]:
    return block(f"heading_{level}", {"rich_text": _rich(value), "is_toggleable": False, "color": "default"})


def bullet(value: str | list[dict[str, Any]], children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return block("bulleted_list_item", {"rich_text": _rich(value), "color": "default"}, children)


def numbered(value: str, children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return block("numbered_list_item", {"rich_text": _rich(value), "color": "default"}, children)


def todo(value: str, checked: bool) -> dict[str, Any]:
    return block("to_do", {"rich_text": _rich(value), "checked": checked, "color": "default"})


def toggle(value: str, children: list[dict[str, Any]]) -> dict[str, Any]:
    return block("toggle", {"rich_text": _rich(value), "color": "default"}, children)


def quote(value: str) -> dict[str, Any]:
    return block("quote", {"rich_text": _rich(value), "color": "default"})


def callout(value: str, emoji: str) -> dict[str, Any]:
    return block("callout", {"rich_text": _rich(value), "icon": {"type": "emoji", "emoji": emoji},
                             "color": "gray_background"})


def code(source: str, language: str) -> dict[str, Any]:
    return block("code", {"rich_text": _rich(source), "caption": [], "language": language})


def table(rows: list[list[str]], header: bool = True) -> dict[str, Any]:
    cells = [block("table_row", {"cells": [_rich(c) for c in row]}) for row in rows]
    return block("table", {"table_width": max(len(r) for r in rows), "has_column_header": header,
                           "has_row_header": False}, cells)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeNotion:
    token: str = "secret_fake"
    url: str = ""
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)  # compact id -> page object
    data_sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # compact id -> data source object
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # compact id -> block object
    children: dict[str, list[str]] = field(default_factory=dict)  # compact parent id -> child block ids
    shared: set[str] = field(default_factory=set)  # pages (and databases) shared with the integration
    requests: list[Request] = field(default_factory=list)
    max_per_response: int = 100
    #: Search stops after this many results and says so (``request_status: incomplete``), as Notion may.
    search_limit: int | None = None
    #: Pages whose content answers this status although search still lists them (unshared or broken in between).
    fail_content: dict[str, int] = field(default_factory=dict)
    #: The integration's "Read content" capability; without it reads answer 403 restricted_resource.
    read_content: bool = True
    clock: datetime = field(default_factory=lambda: datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc))
    _limits: list[tuple[str, float, int]] = field(default_factory=list)  # (path prefix, retry after, times)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the model -----------------------------------------------------------------------------------------
    def _tick(self) -> str:
        self.clock += timedelta(minutes=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:00.000Z")  # Notion rounds down to the minute

    def _store_blocks(self, parent: str, parent_type: str, items: list[dict[str, Any]], when: str) -> None:
        ids = []
        for item in items:
            kids = item.pop("_children", [])
            bid = uuid.uuid4().hex
            obj = {"object": "block", "id": _dashed(bid), "parent": {"type": parent_type, parent_type: _dashed(parent)},
                   "created_time": when, "last_edited_time": when, "created_by": USER, "last_edited_by": USER,
                   "has_children": bool(kids), "in_trash": False, **item}
            self.blocks[bid] = obj
            ids.append(bid)
            self._store_blocks(bid, "block_id", kids, when)
        self.children[parent] = self.children.get(parent, []) + ids

    def add_page(self, title: str, *, parent: str | None = None, blocks: list[dict[str, Any]] | None = None,
                 shared: bool | None = None, in_block: str | None = None) -> str:
        """A page at the workspace's top level (shared unless ``shared=False``), under ``parent`` (a page), or
        inside the block ``in_block`` (a toggle, a column); returns its compact id."""
        pid = uuid.uuid4().hex
        when = self._tick()
        up: dict[str, Any]
        if in_block:
            up = {"type": "block_id", "block_id": _dashed(in_block)}
            self.blocks[in_block]["has_children"] = True
        elif parent:
            up = {"type": "page_id", "page_id": _dashed(parent)}
        else:
            up = {"type": "workspace", "workspace": True}
        self.pages[pid] = {
            "object": "page", "id": _dashed(pid), "created_time": when, "last_edited_time": when,
            "created_by": USER, "last_edited_by": USER, "cover": None, "icon": None, "parent": up,
            "in_trash": False, "is_archived": False, "is_locked": False,
            "properties": {"title": {"id": "title", "type": "title", "title": [text(title)]}},
            "url": f"https://www.notion.so/{_url_slug(title)}-{pid}", "public_url": None}
        if parent or in_block:
            self._store_child_link(str(in_block or parent), pid, "child_page", {"title": title}, when,
                                   "block_id" if in_block else "page_id")
        if shared if shared is not None else not (parent or in_block):
            self.shared.add(pid)
        self._store_blocks(pid, "page_id", blocks or [], when)
        return pid

    def _store_child_link(self, parent: str, child: str, kind: str, body: dict[str, Any], when: str,
                          parent_type: str = "page_id") -> None:
        self.blocks[child] = {"object": "block", "id": _dashed(child),
                              "parent": {"type": parent_type, parent_type: _dashed(parent)},
                              "created_time": when, "last_edited_time": when, "created_by": USER,
                              "last_edited_by": USER, "has_children": False, "in_trash": False, "type": kind,
                              kind: body}
        self.children[parent] = self.children.get(parent, []) + [child]

    def add_database(self, title: str, *, parent: str, schema: dict[str, str]) -> str:
        """A database (one data source) under page ``parent``; returns the data source's compact id.
        ``schema`` maps property names to types (a "title" property named "Name" is added)."""
        db, ds = uuid.uuid4().hex, uuid.uuid4().hex
        when = self._tick()
        properties = {"Name": {"id": "title", "name": "Name", "type": "title", "title": {}}}
        properties.update({name: {"id": uuid.uuid4().hex[:4], "name": name, "type": kind, kind: {}}
                           for name, kind in schema.items()})
        self.data_sources[ds] = {
            "object": "data_source", "id": _dashed(ds), "title": [text(title)], "description": [],
            "parent": {"type": "database_id", "database_id": _dashed(db)},
            "database_parent": {"type": "page_id", "page_id": _dashed(parent)}, "is_inline": False,
            "in_trash": False, "created_time": when, "last_edited_time": when, "created_by": USER,
            "last_edited_by": USER, "properties": properties, "icon": None, "cover": None,
            "url": f"https://www.notion.so/{db}", "public_url": None, "_database": db}
        self._store_child_link(parent, db, "child_database", {"title": title}, when)
        return ds

    def add_row(self, data_source: str, title: str, properties: dict[str, dict[str, Any]],
                blocks: list[dict[str, Any]] | None = None) -> str:
        """A row (a page) of a database; ``properties`` are Notion property values (``{"type": ..., ...}``)."""
        ds = self.data_sources[data_source]
        pid = self.add_page(title, blocks=blocks, shared=False)
        page = self.pages[pid]
        page["parent"] = {"type": "data_source_id", "data_source_id": ds["id"],
                          "database_id": ds["parent"]["database_id"]}
        page["properties"] = {"Name": {"id": "title", "type": "title", "title": [text(title)]},
                              **{name: {"id": ds["properties"][name]["id"], **value}
                                 for name, value in properties.items()}}
        return pid

    def edit(self, page: str, *, blocks: list[dict[str, Any]] | None = None, title: str | None = None) -> None:
        """Replace a page's content (and title): its last_edited_time moves on."""
        obj = self.pages[page]
        when = self._tick()
        obj["last_edited_time"] = when
        if title is not None:
            key = next(k for k, v in obj["properties"].items() if v["type"] == "title")
            obj["properties"][key]["title"] = [text(title)]
        if blocks is not None:
            keep = [b for b in self.children.get(page, []) if self.blocks[b]["type"] in ("child_page",
                                                                                        "child_database")]
            self.children[page] = keep
            self._store_blocks(page, "page_id", blocks, when)

    def trash(self, page: str) -> None:
        """Move a page to the trash (its sub-pages go with it)."""
        when = self._tick()
        for pid in [page, *self._descendants(page)]:
            self.pages[pid]["in_trash"] = True
            self.pages[pid]["last_edited_time"] = when

    def unshare(self, page: str) -> None:
        self.shared.discard(page)

    def rate_limit(self, path_prefix: str, *, retry_after: float = 1, times: int = 1) -> None:
        """The next ``times`` requests whose path starts with ``path_prefix`` answer 429 with Retry-After."""
        self._limits.append((path_prefix, retry_after, times))

    def served(self, method: str, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def _descendants(self, page: str) -> list[str]:
        out = []
        for pid, obj in self.pages.items():
            if self._ancestors(obj) and page in self._ancestors(obj):
                out.append(pid)
        return out

    def _ancestors(self, obj: dict[str, Any]) -> list[str]:
        chain = []
        parent = obj.get("parent") or {}
        for _ in range(32):
            kind = parent.get("type")
            if kind == "page_id":
                pid = _compact(parent["page_id"])
                chain.append(pid)
                parent = (self.pages.get(pid) or {}).get("parent") or {}
            elif kind == "data_source_id":
                ds = self.data_sources.get(_compact(parent["data_source_id"])) or {}
                chain.append(str(ds.get("_database", "")))
                parent = ds.get("database_parent") or {}
            elif kind == "block_id":
                bid = _compact(parent["block_id"])
                parent = (self.blocks.get(bid) or {}).get("parent") or {}
            else:
                break
        return chain

    def visible(self, pid: str) -> bool:
        obj = self.pages.get(pid)
        if obj is None:
            return False
        return pid in self.shared or any(a in self.shared for a in self._ancestors(obj))

    def _source_visible(self, ds: str) -> bool:
        obj = self.data_sources.get(ds)
        if obj is None:
            return False
        parent = _compact(obj["database_parent"].get("page_id", ""))
        return obj["_database"] in self.shared or self.visible(parent)

    # --- answers -----------------------------------------------------------------------------------------------
    def answer(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            self.requests.append(Request(method, path, query, body, headers))
            for index, (prefix, retry_after, times) in enumerate(self._limits):
                if path.startswith(prefix) and times > 0:
                    self._limits[index] = (prefix, retry_after, times - 1)
                    return 429, _error(429, "rate_limited", "You have been rate limited. Please try again in a "
                                       "few minutes."), {"Retry-After": f"{retry_after:g}"}
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, _error(401, "unauthorized", "API token is invalid."), {}
            if "notion-version" not in headers:
                return 400, _error(400, "missing_version", "Notion-Version header failed validation: "
                                   "Notion-Version header should be defined, instead was `undefined`."), {}
            if headers["notion-version"] != VERSION:
                return 400, _error(400, "validation_error", f"this fake speaks Notion-Version {VERSION} only"), {}
            if not self.read_content:
                return 403, _error(403, "restricted_resource", "Insufficient permissions for this endpoint."), {}
            return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "POST" and path == "/v1/search":
            value = (body.get("filter") or {}).get("value", "page")
            if value not in ("page", "data_source"):
                return 400, _error(400, "validation_error", "body failed validation: body.filter.value should "
                                   f"be `\"page\"` or `\"data_source\"`, instead was `\"{value}\"`."), {}
            if value == "page":
                items = [p for pid, p in self.pages.items() if self.visible(pid)]
            else:
                items = [_public(d) for ds, d in self.data_sources.items() if self._source_visible(ds)]
            sort = body.get("sort") or {}
            items.sort(key=lambda o: o["last_edited_time"], reverse=sort.get("direction") != "ascending")
            status: dict[str, Any] = {"type": "complete"}
            if self.search_limit is not None and len(items) > self.search_limit:
                items = items[: self.search_limit]
                status = {"type": "incomplete", "incomplete_reason": "query_result_limit_reached"}
            answer = self._page_of(items, body.get("start_cursor"), body.get("page_size", 100))
            if answer[0] == 200:
                answer[1]["request_status"] = status
            return answer
        match = re.fullmatch(r"/v1/data_sources/([0-9a-fA-F-]{32,36})/query", path)
        if method == "POST" and match:
            ds = _compact(match.group(1))
            if not self._source_visible(ds):
                return _not_found("data_source", ds)
            rows = [p for p in self.pages.values() if not p["in_trash"]
                    and _compact((p["parent"].get("data_source_id") or "")) == ds]
            rows.sort(key=lambda o: o["created_time"], reverse=True)
            return self._page_of(rows, body.get("start_cursor"), body.get("page_size", 100))
        match = re.fullmatch(r"/v1/blocks/([0-9a-fA-F-]{32,36})/children", path)
        if method == "GET" and match:
            bid = _compact(match.group(1))
            if self.fail_content.get(bid) == 404:
                return _not_found("block", bid)
            if bid in self.fail_content:
                return self.fail_content[bid], _error(self.fail_content[bid], "internal_server_error",
                                                      "Unexpected error occurred."), {}
            if bid in self.pages:
                if not self.visible(bid):
                    return _not_found("block", bid)
            elif bid not in self.blocks or not self._block_visible(bid):
                return _not_found("block", bid)
            kids = [self.blocks[b] for b in self.children.get(bid, [])]
            size = int((query.get("page_size") or ["100"])[0])
            cursor = query.get("start_cursor")
            return self._page_of(kids, cursor[0] if cursor else None, size, kind="block")
        match = re.fullmatch(r"/v1/(blocks|pages)/([0-9a-fA-F-]{32,36})", path)
        if method == "GET" and match:
            oid = _compact(match.group(2))
            if match.group(1) == "pages":
                return (200, self.pages[oid], {}) if self.visible(oid) else _not_found("page", oid)
            if oid in self.blocks and self._block_visible(oid):
                return 200, self.blocks[oid], {}
            return _not_found("block", oid)
        return 400, _error(400, "invalid_request_url", "Invalid request URL."), {}

    def _block_visible(self, bid: str) -> bool:
        parent = self.blocks[bid]["parent"]
        for _ in range(64):
            if parent["type"] == "page_id":
                return self.visible(_compact(parent["page_id"]))
            up = self.blocks.get(_compact(parent["block_id"]))
            if up is None:
                return False
            parent = up["parent"]
        return False

    def _page_of(self, items: list[dict[str, Any]], cursor: str | None, size: Any, kind: str = "page_or_data_source"
                 ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not isinstance(size, int) or not 1 <= size <= 100:
            return 400, _error(400, "validation_error", "body failed validation: body.page_size should be ≤ "
                               f"`100`, instead was `{size}`."), {}
        start = 0
        if cursor:
            ids = [o["id"] for o in items]
            if cursor not in ids:
                return 400, _error(400, "validation_error", "start_cursor provided is invalid: " + cursor), {}
            start = ids.index(cursor)
        end = start + min(size, self.max_per_response)
        more = end < len(items)
        return 200, {"object": "list", "results": items[start:end],
                     "next_cursor": items[end]["id"] if more else None, "has_more": more, "type": kind,
                     kind: {}, "request_id": str(uuid.uuid4())}, {}


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"object": "error", "status": status, "code": code, "message": message, "request_id": str(uuid.uuid4())}


def _not_found(kind: str, oid: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return 404, _error(404, "object_not_found", f"Could not find {kind} with ID: {_dashed(oid)}. Make sure the "
                       "relevant pages and databases are shared with your integration."), {}


def _compact(value: str) -> str:
    return value.replace("-", "").lower()


def _dashed(value: str) -> str:
    v = _compact(value)
    return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"


def _url_slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")


def _handler(fake: FakeNotion) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            extra: dict[str, str]
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                status, payload, extra = 400, _error(400, "invalid_json", "Error parsing JSON body."), {}
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = fake.answer(method, parts.path, parse_qs(parts.query),
                                                     body if isinstance(body, dict) else {}, headers)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self._serve("POST")

    return Handler


@contextmanager
def start_fake_notion(token: str = "secret_fake") -> Iterator[FakeNotion]:
    fake = FakeNotion(token=token)
    with serving(_handler(fake)) as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
