"""The ``notion`` kind: the pages and databases shared with a Notion internal integration, as Markdown.

- **API**: Notion's REST API, ``Notion-Version: 2026-03-11`` (the current version; databases are containers of
  *data sources* since 2025-09-03), bearer token of an internal integration, base URL ``api_url``. Plain
  :class:`~knowledge.connectors.http.HttpClient` (Retry-After honoured, a minimum interval between requests for
  Notion's ~3 requests/s) rather than ``notion-client``, whose retry sleeps cannot be injected, which keeps no
  interval between requests, and which would only save us three URL templates.
- **Listing**: ``POST /v1/search`` (pages, then data sources; ``start_cursor``/``has_more``/``next_cursor``,
  ``page_size`` 100), plus ``POST /v1/data_sources/{id}/query`` for the rows of every shared database (search
  is eventually consistent and may stop at ``query_result_limit_reached``; a data source query lists its rows
  exactly). With ``roots``, only those pages and their descendants (through pages, databases and blocks).
- **Content**: ``GET /v1/blocks/{id}/children`` (paginated, recursive for ``has_children``) rendered as
  Markdown with front matter (title, url); a database row's properties become a short list under its title.
- **Incremental**: a page's ``version`` is its ``last_edited_time`` (a block edit updates it). Notion rounds it
  down to the minute, so a page edited within :data:`SETTLE_S` of the listing gets a provisional version and is
  read again at the next sync (an unchanged body is not re-embedded: the index compares content hashes).
  Trashed pages, and pages search no longer returns (unshared, deleted), are deleted.
- **Permissions**: the API does not say with whom a page is shared; only the source's ``visibility`` applies.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from bot.core.log import get_logger
from knowledge.connectors.base import (
    HttpSource,
    Changes,
    Connector,
    DocumentRef,
    FetchError,
    SourceError,
    read_secret,
)
from knowledge.connectors.http import RETRIED_STATUSES, HttpClient

log = get_logger(__name__)

#: The API version sent with every request (Notion's current one; see docs/connectors/notion.md).
NOTION_VERSION = "2026-03-11"
#: A page edited less than this long before the listing is read again at the next sync (minute-granular times).
SETTLE_S = 120.0
PAGE_SIZE = 100
#: Nesting depth of blocks read below a page (Notion's own UI nests far less).
MAX_DEPTH = 12
APP_URL = "https://www.notion.so"
_LIST_KINDS = {"bulleted_list_item", "numbered_list_item", "to_do", "toggle", "child_page", "child_database",
               "link_to_page"}

_HEX32 = re.compile(r"([0-9a-fA-F]{32})(?:[?#].*)?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def compact_id(value: str) -> str:
    """A Notion id without dashes, lower case (``1f2e…`` 32 hex digits)."""
    return value.replace("-", "").lower()


def page_id_of(value: str) -> str:
    """The page id in ``value``: a UUID with or without dashes, or a Notion page URL ending in one."""
    value = value.strip()
    if _UUID.match(value):
        return compact_id(value)
    match = _HEX32.search(value.rstrip("/"))
    if match:
        return match.group(1).lower()
    raise ValueError(f"'{value}' is not a Notion page id or page URL")


def slug(text: str, limit: int = 60) -> str:
    words = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-_")
    return words[:limit].rstrip("-_") or "untitled"


class NotionSource(HttpSource):
    kind: Literal["notion"]
    #: The integration secret ("Internal Integration Secret"), from an environment variable or a file.
    token_env: str | None = None
    token_file: Path | None = None
    api_url: str = "https://api.notion.com"
    #: Only these pages (ids or page URLs) and their descendants; empty = everything shared with the integration.
    roots: list[str] = Field(default_factory=list)
    #: Read the rows of shared databases (each row is a page).
    include_databases: bool = True
    #: Seconds kept between two requests (Notion allows about 3 requests/s on average).
    min_interval_s: float = Field(0.35, ge=0)

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @field_validator("roots")
    @classmethod
    def _roots(cls, value: list[str]) -> list[str]:
        return [page_id_of(v) for v in value]

    @model_validator(mode="after")
    def _credential(self) -> NotionSource:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of 'token_env' and 'token_file' (the integration secret)")
        return self

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        token = read_secret(self.name, "token", self.token_env, self.token_file, environ)
        assert token is not None  # one of token_env / token_file is set (validated)
        return NotionConnector(self, token=token, max_bytes=max_bytes)


# --- rendering ------------------------------------------------------------------------------------------------
def absolute(href: str) -> str:
    return APP_URL + href if href.startswith("/") else href


def rich_text(items: list[dict[str, Any]] | None) -> str:
    """Notion rich text as Markdown: bold, italic, strikethrough, inline code, links, equations."""
    out = []
    for item in items or []:
        text = str(item.get("plain_text") or "")
        if not text:
            continue
        if item.get("type") == "equation":
            out.append(f"${text}$")
            continue
        notes = item.get("annotations") or {}
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()):]
        core = text.strip()
        if core:
            if notes.get("code"):
                core = f"`{core}`"
            if notes.get("bold"):
                core = f"**{core}**"
            if notes.get("italic"):
                core = f"*{core}*"
            if notes.get("strikethrough"):
                core = f"~~{core}~~"
            href = item.get("href")
            if href:
                core = f"[{core}]({absolute(str(href))})"
        out.append(lead + core + trail)
    return "".join(out)


def plain(items: list[dict[str, Any]] | None) -> str:
    return "".join(str(i.get("plain_text") or "") for i in items or []).strip()


def title_of(obj: dict[str, Any]) -> str:
    """A page's title (its ``title`` property) or a data source's."""
    if isinstance(obj.get("title"), list):
        return plain(obj["title"]) or "Untitled"
    for prop in (obj.get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return plain(prop.get("title")) or "Untitled"
    return "Untitled"


def property_text(prop: dict[str, Any]) -> str:
    """One database property value as short text ("" when empty or not readable as text)."""
    kind = str(prop.get("type") or "")
    value = prop.get(kind)
    if value is None:
        return ""
    if kind in ("rich_text", "title"):
        return rich_text(value)
    if kind in ("select", "status"):
        return str(value.get("name") or "")
    if kind == "multi_select":
        return ", ".join(str(v.get("name") or "") for v in value)
    if kind == "date":
        start, end = value.get("start") or "", value.get("end")
        return f"{start} → {end}" if end else str(start)
    if kind in ("people", "created_by", "last_edited_by"):
        people = value if isinstance(value, list) else [value]
        return ", ".join(str(p.get("name") or "") for p in people if p.get("name"))
    if kind == "checkbox":
        return "yes" if value else "no"
    if kind in ("number", "url", "email", "phone_number", "created_time", "last_edited_time"):
        return str(value)
    if kind == "formula":
        inner = value.get(value.get("type", ""))
        return property_text({"type": "date", "date": inner}) if value.get("type") == "date" else (
            "" if inner is None else str(inner))
    if kind == "unique_id":
        number = value.get("number")
        return f"{value.get('prefix')}-{number}" if value.get("prefix") else ("" if number is None else str(number))
    if kind == "files":
        return ", ".join(str(f.get("name") or "") for f in value)
    if kind == "rollup" and value.get("type") in ("number", "date"):
        inner = value.get(value["type"])
        return "" if inner is None else (property_text({"type": "date", "date": inner})
                                         if value["type"] == "date" else str(inner))
    return ""  # relation, rollup arrays, button, verification: not rendered


class NotionError(Exception):
    """An error answer of the Notion API (``{"object": "error", "status", "code", "message"}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Renderer:
    """Blocks to Markdown. ``children(block_id)`` lists a block's children (paginated by the caller)."""

    def __init__(self, children: Callable[[str], list[dict[str, Any]]], links: Mapping[str, str]) -> None:
        self._children = children
        self._links = links  # compact page id -> its URL (pages we know)
        self.unsupported: dict[str, int] = {}

    def _link(self, page_id: str) -> str:
        return self._links.get(compact_id(page_id), f"{APP_URL}/{compact_id(page_id)}")

    def render(self, block_id: str) -> list[str]:
        return self._blocks(self._children(block_id), 0, "")

    def _blocks(self, blocks: list[dict[str, Any]], depth: int, indent: str) -> list[str]:
        lines: list[str] = []
        number = 0
        previous = ""
        for block in blocks:
            kind = str(block.get("type") or "")
            number = number + 1 if kind == "numbered_list_item" else 0
            if previous in _LIST_KINDS and kind not in _LIST_KINDS:
                lines.append("")  # end the list: what follows is not a continuation of its last item
            lines.extend(self._block(block, kind, depth, indent, number))
            previous = kind
        return lines

    def _kids(self, block: dict[str, Any], depth: int, indent: str, of: str | None = None) -> list[str]:
        if not block.get("has_children") and of is None:
            return []
        if depth >= MAX_DEPTH:
            return [f"{indent}_(deeper content not read)_"]
        try:
            children = self._children(of or str(block["id"]))
        except NotionError as exc:
            if exc.status not in (403, 404):
                raise
            # e.g. a synced block whose original is on a page the integration cannot see
            return [f"{indent}<!-- Notion content not shared with the integration -->"]
        return self._blocks(children, depth + 1, indent)

    def _block(self, block: dict[str, Any], kind: str, depth: int, indent: str, number: int) -> list[str]:
        data = block.get(kind) or {}
        text = rich_text(data.get("rich_text")) if isinstance(data, dict) else ""
        sub = indent + "  "
        if kind == "paragraph":
            return [f"{indent}{text}", ""] + self._kids(block, depth, sub) if text else self._kids(block, depth, sub)
        if kind in ("heading_1", "heading_2", "heading_3", "heading_4"):
            level = int(kind[-1]) + 1  # the page title is the document's "#"
            return ["", f"{'#' * level} {plain(data.get('rich_text'))}", ""] + self._kids(block, depth, indent)
        if kind in ("bulleted_list_item", "toggle"):
            return [f"{indent}- {text}"] + self._kids(block, depth, sub)
        if kind == "numbered_list_item":
            return [f"{indent}{number}. {text}"] + self._kids(block, depth, indent + "   ")
        if kind == "to_do":
            return [f"{indent}- [{'x' if data.get('checked') else ' '}] {text}"] + self._kids(block, depth, sub)
        if kind in ("quote", "callout"):
            icon = (data.get("icon") or {}).get("emoji") if kind == "callout" else None
            body = [f"{indent}> {icon + ' ' if icon else ''}{text}"]
            body += [f"{indent}> {line}" if line else f"{indent}>" for line in self._kids(block, depth, "")]
            return [*body, ""]
        if kind == "code":
            language = str(data.get("language") or "").replace("plain text", "")
            code = "".join(str(i.get("plain_text") or "") for i in data.get("rich_text") or [])
            return [f"{indent}```{language}", *[indent + line for line in code.splitlines()], f"{indent}```", ""]
        if kind == "equation":
            return [f"{indent}$${data.get('expression', '')}$$", ""]
        if kind == "divider":
            return [f"{indent}---", ""]
        if kind == "table":
            return self._table(block, data, indent)
        if kind == "child_page":
            return [f"{indent}- [{data.get('title') or 'Untitled'}]({self._link(str(block['id']))})"]
        if kind == "child_database":
            return [f"{indent}- [{data.get('title') or 'Untitled database'}]({self._link(str(block['id']))})"]
        if kind == "link_to_page":
            target = data.get(data.get("type", "")) or ""
            return [f"{indent}- [linked page]({self._link(str(target))})"] if target else []
        if kind in ("bookmark", "embed", "link_preview"):
            url = str(data.get("url") or "")
            label = rich_text(data.get("caption")) or url
            return [f"{indent}[{label}]({url})", ""] if url else []
        if kind in ("image", "file", "pdf", "video", "audio"):
            caption = rich_text(data.get("caption")) or str(data.get("name") or "")
            if data.get("type") == "external":  # Notion-hosted file URLs expire within the hour: not kept
                url = str((data.get("external") or {}).get("url") or "")
                return [f"{indent}[{caption or kind}]({url})", ""] if url else []
            return [f"{indent}_({kind}: {caption})_", ""] if caption else []
        if kind in ("column_list", "column"):
            return self._kids(block, depth, indent)
        if kind == "synced_block":
            original = (data.get("synced_from") or {}).get("block_id")
            return self._kids(block, depth, indent, of=str(original)) if original else self._kids(block, depth,
                                                                                                  indent)
        if kind in ("table_of_contents", "breadcrumb", "template"):
            return []
        self.unsupported[kind or "unknown"] = self.unsupported.get(kind or "unknown", 0) + 1
        return [f"{indent}<!-- Notion block not supported: {kind or 'unknown'} -->"]

    def _table(self, block: dict[str, Any], data: dict[str, Any], indent: str) -> list[str]:
        rows = [[rich_text(cell).replace("|", "\\|").replace("\n", " ") for cell in
                 (r.get("table_row") or {}).get("cells") or []]
                for r in self._children(str(block["id"])) if r.get("type") == "table_row"]
        if not rows:
            return []
        width = max(int(data.get("table_width") or 0), *(len(r) for r in rows))
        rows = [r + [""] * (width - len(r)) for r in rows]
        header = rows.pop(0) if data.get("has_column_header") else [""] * width
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return ["", *[indent + line for line in lines], ""]


def front_matter(title: str, url: str) -> str:
    return f"---\ntitle: {json.dumps(title, ensure_ascii=False)}\nurl: {json.dumps(url)}\n---\n\n"


# --- the connector ---------------------------------------------------------------------------------------------
class NotionConnector:
    def __init__(self, source: NotionSource, *, token: str, max_bytes: int = 5_000_000,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self._clock = clock
        headers = {"Authorization": f"Bearer {token}", "Notion-Version": NOTION_VERSION,
                   "User-Agent": "DeskmateBot/1.0"}
        self._http = HttpClient.for_source(source, headers=headers, base_url=source.api_url,
                                           min_interval_s=source.min_interval_s, sleep=sleep, transport=transport)
        self._bodies: dict[str, bytes] = {}
        self._pages: dict[str, dict[str, Any]] = {}  # path -> the page object listed
        self._links: dict[str, str] = {}
        self._incomplete = False  # the last listing stopped short (search's query_result_limit_reached)

    @property
    def local_root(self) -> Path | None:
        return None

    # --- HTTP -----------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One API call; raises :class:`NotionError` for Notion's error answers and FetchError for transport
        failures (and a rate limit still in force after the retries)."""
        response = self._http.request(method, path, **kwargs)
        if response.status_code == 200:
            data = response.json()
            if not isinstance(data, dict):
                raise FetchError(f"{method} {path}: not a JSON object")
            return data
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        raise NotionError(response.status_code, str(body.get("code") or ""), str(body.get("message") or ""))

    def _paginate(self, method: str, path: str, body: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            if method == "GET":
                params: dict[str, Any] = {"page_size": PAGE_SIZE, **({"start_cursor": cursor} if cursor else {})}
                data = self._call("GET", path, params=params)
            else:
                data = self._call("POST", path, json={**(body or {}), "page_size": PAGE_SIZE,
                                                      **({"start_cursor": cursor} if cursor else {})})
            yield from (r for r in data.get("results") or [] if isinstance(r, dict))
            if (data.get("request_status") or {}).get("type") == "incomplete":
                self._incomplete = True
            cursor = data.get("next_cursor")
            if not data.get("has_more") or not cursor:
                return

    def _source_error(self, exc: Exception, what: str) -> SourceError:
        name = self.source.name
        if isinstance(exc, NotionError):
            if exc.status == 401:
                return SourceError(f"source '{name}': Notion rejected the integration secret ({exc.code or 401}); "
                                   f"check {self._credential_name()} holds the integration's current secret")
            if exc.status == 403:
                return SourceError(f"source '{name}': the integration may not {what} ({exc.code or 403}); give it "
                                   "the 'Read content' capability")
            return SourceError(f"source '{name}': {what} failed: HTTP {exc.status} {exc.code}".rstrip())
        hint = f" (is {self.source.api_url} reachable?)" if " requesting " in str(exc) else ""
        return SourceError(f"source '{name}': {what} failed: {exc}{hint}")

    def _credential_name(self) -> str:
        return (f"token_env {self.source.token_env}" if self.source.token_env
                else f"token_file {self.source.token_file}")

    # --- listing --------------------------------------------------------------------------------------------
    def _list(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Every page (and database row) and data source the integration sees, by compact id."""
        self._incomplete = False
        pages: dict[str, dict[str, Any]] = {}
        sources: dict[str, dict[str, Any]] = {}
        sort = {"timestamp": "last_edited_time", "direction": "descending"}
        try:
            for obj in self._paginate("POST", "/v1/search", {"filter": {"property": "object", "value": "page"},
                                                             "sort": sort}):
                if obj.get("object") == "page":
                    pages[compact_id(str(obj["id"]))] = obj
            if self.source.include_databases:
                for obj in self._paginate("POST", "/v1/search",
                                          {"filter": {"property": "object", "value": "data_source"},
                                           "sort": sort}):
                    if obj.get("object") == "data_source" and not _trashed(obj):
                        sources[compact_id(str(obj["id"]))] = obj
        except (NotionError, FetchError) as exc:
            raise self._source_error(exc, "search") from exc
        for source_id in sources:
            try:
                for row in self._paginate("POST", f"/v1/data_sources/{source_id}/query"):
                    if row.get("object") == "page":
                        pages[compact_id(str(row["id"]))] = row
            except NotionError as exc:
                if exc.status in (401,):
                    raise self._source_error(exc, "query a database") from exc
                if exc.status in (403, 404):  # unshared since the search: its rows go with it
                    continue
                raise self._source_error(exc, f"query the data source {source_id}") from exc
            except FetchError as exc:
                raise self._source_error(exc, "query a database") from exc
        return pages, sources

    @staticmethod
    def _parent(obj: dict[str, Any]) -> tuple[str, str] | None:
        parent = obj.get("parent") or {}
        kind = str(parent.get("type") or "")
        if kind == "data_source_id":
            return "data_source", compact_id(str(parent["data_source_id"]))
        if kind in ("page_id", "database_id", "block_id"):
            return kind[:-3], compact_id(str(parent[kind]))
        return None  # workspace, or something we cannot follow

    def _under_roots(self, page_id: str, pages: dict[str, dict[str, Any]],
                     sources: dict[str, dict[str, Any]], cache: dict[str, bool]) -> bool:
        roots = set(self.source.roots)
        chain: list[str] = []
        kind, current = "page", page_id
        verdict = False
        for _ in range(64):
            key = f"{kind}:{current}"
            if key in cache:
                verdict = cache[key]
                break
            chain.append(key)
            if kind == "page" and current in roots:
                verdict = True
                break
            up = self._up(kind, current, pages, sources)
            if up is None:
                break
            kind, current = up
        for key in chain:
            cache[key] = verdict
        return verdict

    def _up(self, kind: str, obj_id: str, pages: dict[str, dict[str, Any]],
            sources: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
        """The parent of a page, data source, database or block, as (kind, compact id)."""
        if kind == "page":
            obj = pages.get(obj_id)
            return self._parent(obj) if obj is not None else None
        if kind == "data_source":
            data_source = sources.get(obj_id)
            if data_source is None:
                return None
            database_parent = data_source.get("database_parent") or {}
            up = self._parent({"parent": database_parent})
            if up is not None:
                return up
            database = (data_source.get("parent") or {}).get("database_id")
            return ("database", compact_id(str(database))) if database else None
        if kind == "database":
            for data_source in sources.values():
                if compact_id(str((data_source.get("parent") or {}).get("database_id") or "")) == obj_id:
                    return self._parent({"parent": data_source.get("database_parent") or {}})
            return None
        if kind == "block":
            try:
                block = self._call("GET", f"/v1/blocks/{obj_id}")
            except (NotionError, FetchError):
                return None
            return self._parent(block)
        return None

    def _check_roots(self, pages: dict[str, dict[str, Any]]) -> None:
        for root in self.source.roots:
            if root in pages:
                continue
            try:
                page = self._call("GET", f"/v1/pages/{root}")
            except NotionError as exc:
                if exc.status == 404:
                    raise SourceError(f"source '{self.source.name}': root page {root} does not exist or is not "
                                      "shared with the integration (object_not_found); share it with the "
                                      "integration (page menu → Connections)") from exc
                raise self._source_error(exc, f"read root page {root}") from exc
            except FetchError as exc:
                raise self._source_error(exc, f"read root page {root}") from exc
            pages[root] = page

    def _path(self, page: dict[str, Any], old: dict[str, Any] | None) -> str:
        if old is not None and old.get("path"):
            return str(old["path"])  # a page keeps its path (and so its document id) when renamed
        return f"{slug(title_of(page))}-{compact_id(str(page['id']))}.md"

    def changes(self, cursor: str | None) -> Changes:
        try:
            previous: dict[str, dict[str, Any]] = json.loads(cursor) if cursor else {}
        except ValueError:  # not ours (e.g. written by an older version): read everything again
            previous = {}
        now = self._clock()
        pages, sources = self._list()
        if self.source.roots:
            self._check_roots(pages)
            cache: dict[str, bool] = {}
            pages = {pid: p for pid, p in pages.items() if self._under_roots(pid, pages, sources, cache)}
        if not self.source.include_databases:  # search returns database rows too: leave them out
            pages = {pid: p for pid, p in pages.items()
                     if (p.get("parent") or {}).get("type") not in ("data_source_id", "database_id")}
        live = {pid: p for pid, p in pages.items() if not _trashed(p)}
        self._links = {pid: str(p.get("url") or f"{APP_URL}/{pid}") for pid, p in live.items()}
        for data_source in sources.values():  # a child_database block's id is its database's
            database = (data_source.get("parent") or {}).get("database_id")
            if database and data_source.get("url"):
                self._links[compact_id(str(database))] = str(data_source["url"])
        state: dict[str, dict[str, Any]] = {}
        changed: list[DocumentRef] = []
        skipped: dict[str, str] = {}
        errors: list[str] = []
        for pid, page in live.items():
            old = previous.get(pid)
            path = self._path(page, old)
            version = _version(str(page.get("last_edited_time") or ""), now)
            url = self._links[pid]
            entry = {"path": path, "version": version}
            if old is None or old.get("version") != version:
                try:
                    body = self._render(page, pid)
                except NotionError as exc:
                    if exc.status in (403, 404):  # unshared or deleted since the listing
                        log.info("source.notion.page_gone", source=self.source.name, status=exc.status)
                        continue
                    if exc.status == 401:
                        raise self._source_error(exc, "read pages") from exc
                    errors.append(f"{path}: HTTP {exc.status} {exc.code}".rstrip())
                    if old is not None and not old.get("skip"):
                        state[pid] = old
                        changed.append(DocumentRef(old["path"], old["version"], url))
                    continue
                except FetchError as exc:
                    errors.append(f"{path}: {exc}")
                    if old is not None and not old.get("skip"):
                        state[pid] = old
                        changed.append(DocumentRef(old["path"], old["version"], url))
                    continue
                if len(body) > self.max_bytes:
                    skipped[path] = f"too large ({len(body):,} bytes > limit {self.max_bytes:,})"
                    state[pid] = {**entry, "skip": skipped[path]}
                    continue
                self._bodies[path] = body
            elif old.get("skip"):  # still too large: not downloaded again until it changes
                skipped[path] = str(old["skip"])
                state[pid] = old
                continue
            self._pages[path] = page
            state[pid] = entry
            changed.append(DocumentRef(path, version, url))
        if self._incomplete:  # keep what was not listed this time (it is not deleted either)
            for pid, old in previous.items():
                if pid not in state and not (pid in pages and _trashed(pages[pid])):
                    state[pid] = old
            log.warning("source.notion.listing_incomplete", source=self.source.name)
        # A complete listing deletes whatever it no longer returns; an incomplete one only the trashed pages.
        deleted = [] if not self._incomplete else sorted(
            str(previous[pid]["path"]) for pid, p in pages.items() if _trashed(p) and pid in previous)
        log.info("source.notion.listed", source=self.source.name, pages=len(live), data_sources=len(sources),
                 rendered=len(self._bodies), errors=len(errors))
        return Changes(changed=changed, deleted=deleted, cursor=json.dumps(state, sort_keys=True),
                       complete=not self._incomplete, skipped=skipped, errors=errors)

    def _render(self, page: dict[str, Any], pid: str) -> bytes:
        renderer = Renderer(self._children, self._links)
        title = title_of(page)
        lines = [f"# {title}", ""]
        if (page.get("parent") or {}).get("type") in ("data_source_id", "database_id"):
            for name, prop in (page.get("properties") or {}).items():
                if isinstance(prop, dict) and prop.get("type") != "title":
                    value = property_text(prop)
                    if value:
                        lines.append(f"- **{name}:** {value}")
            lines.append("")
        lines.extend(renderer.render(pid))
        if renderer.unsupported:
            log.info("source.notion.unsupported_blocks", source=self.source.name, types=renderer.unsupported)
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
        url = str(page.get("url") or f"{APP_URL}/{pid}")
        return (front_matter(title, url) + text).encode("utf-8")

    def _children(self, block_id: str) -> list[dict[str, Any]]:
        return list(self._paginate("GET", f"/v1/blocks/{compact_id(block_id)}/children"))

    def fetch(self, ref: DocumentRef) -> bytes:
        body = self._bodies.pop(ref.path, None)
        if body is not None:
            return body
        page = self._pages.get(ref.path)
        if page is None:
            raise FetchError("not listed")
        try:
            return self._render(page, compact_id(str(page["id"])))
        except NotionError as exc:
            raise FetchError(f"HTTP {exc.status} {exc.code}".rstrip()) from exc

    def close(self) -> None:
        self._http.close()


def _trashed(obj: dict[str, Any]) -> bool:
    return bool(obj.get("in_trash") or obj.get("archived"))


def _version(last_edited: str, now: datetime) -> str:
    """The page's version: its last_edited_time, provisional (read again next time) while its minute may still
    take edits that would not change it."""
    try:
        edited = datetime.fromisoformat(last_edited.replace("Z", "+00:00"))
    except ValueError:
        return last_edited
    if now - edited < timedelta(seconds=SETTLE_S):
        return f"{last_edited}~{now.isoformat(timespec='seconds')}"
    return last_edited


__all__ = ["NOTION_VERSION", "RETRIED_STATUSES", "NotionConnector", "NotionError", "NotionSource"]
