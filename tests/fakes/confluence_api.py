"""A local fake of a Confluence site, spoken over real HTTP on 127.0.0.1: Confluence Cloud (REST API v2 under
``/wiki/api/v2``, the v1 CQL search and downloads under ``/wiki``) or Confluence Server / Data Center (REST API v1
under ``<context>/rest/api``).

Point a ``confluence`` source's ``base_url`` at ``fake.base_url``. The site is an in-memory model the test edits
between syncs (spaces, pages with their storage-format body, version, status, parent and read restrictions,
attachments); every request is recorded (``fake.requests``) so a test can assert what was (not) downloaded.

Wire format as documented by Atlassian:

- Cloud v2: ``GET /wiki/api/v2/spaces?keys=A,B``, ``GET /wiki/api/v2/spaces/{id}/pages?status=&limit=&cursor=``
  (no body unless ``body-format``), ``GET /wiki/api/v2/pages/{id}?body-format=storage``; cursor pagination: the
  next page's URL in ``_links.next`` and in a ``Link: <…>; rel="next"`` header; errors as
  ``{"errors": [{"status", "code", "title", "detail"}]}``. Basic auth ``email:api-token``.
- v1 (Cloud under ``/wiki``, Server under its context path): ``GET /rest/api/content?spaceKey=&type=page&status=
  &start=&limit=&expand=`` (Server), ``GET /rest/api/content/{id}?expand=body.storage,version``,
  ``GET /rest/api/space/{key}``, ``GET /rest/api/content/search?cql=&expand=&limit=`` (Cloud: ``cursor`` in
  ``_links.next``; Server: ``start``), expansions ``version``, ``ancestors``, ``container``,
  ``restrictions.read.restrictions.user|group``, ``body.storage``; ``_links.base`` / ``_links.next`` relative to
  it; errors ``{"statusCode", "message"}``. Server: ``Authorization: Bearer <personal access token>``.
- Downloads: ``GET <wiki>/download/attachments/{page id}/{file name}?version=…``.
- ``fake.throttle(path_prefix, times, retry_after)``: that many requests answer ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.fakes.http_server import serving


@dataclass
class Page:
    id: str
    space: str
    title: str
    body: str
    version: int = 1
    status: str = "current"  # current | archived | trashed
    parent: str | None = None
    read_users: list[str] = field(default_factory=list)
    read_groups: list[str] = field(default_factory=list)


@dataclass
class Attachment:
    id: str
    page: str
    title: str
    media_type: str
    data: bytes
    version: int = 1
    status: str = "current"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeConfluence:
    deployment: str = "cloud"  # cloud | server
    context: str = "/confluence"  # Server's context path
    email: str = "bot@acme.example"
    token: str = "atl-token-123"
    root: str = ""  # http://127.0.0.1:<port>
    spaces: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {"id", "name"}
    pages: dict[str, Page] = field(default_factory=dict)
    attachments: dict[str, Attachment] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    #: False: v2 listings give the next page only in the ``Link`` header (as some gateways and older versions do).
    v2_next_in_body: bool = True
    #: Pages whose body answers 500 (a broken macro, an outage of one node).
    broken: set[str] = field(default_factory=set)
    #: Pages the CQL search does not know yet (its index lags behind edits).
    search_lag: set[str] = field(default_factory=set)
    throttles: list[list[Any]] = field(default_factory=list)  # [path prefix, times left, retry-after]
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(100_001))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the model ------------------------------------------------------------------------------------------
    def add_space(self, key: str, name: str) -> None:
        self.spaces[key] = {"id": str(next(self._ids)), "name": name}

    def add_page(self, space: str, title: str, body: str, *, parent: Page | None = None) -> Page:
        page = Page(str(next(self._ids)), space, title, body, parent=parent.id if parent else None)
        self.pages[page.id] = page
        return page

    def edit(self, page: Page, *, body: str | None = None, title: str | None = None) -> None:
        page.body = body if body is not None else page.body
        page.title = title if title is not None else page.title
        page.version += 1

    def attach(self, page: Page, filename: str, media_type: str, data: bytes) -> Attachment:
        ident = str(next(self._ids))
        attachment = Attachment(f"att{ident}" if self.deployment == "cloud" else ident, page.id, filename,
                                media_type, data)
        self.attachments[attachment.id] = attachment
        return attachment

    def throttle(self, path_prefix: str, *, times: int = 1, retry_after: str = "2") -> None:
        self.throttles.append([path_prefix, times, retry_after])

    # --- what was asked -------------------------------------------------------------------------------------
    def served(self, pattern: str) -> list[Request]:
        """The requests whose path matches ``pattern`` (a regular expression searched in the path)."""
        return [r for r in self.requests if re.search(pattern, r.path)]

    @property
    def base_url(self) -> str:
        """What a source's ``base_url`` is: the site (Cloud), or the site with its context path (Server)."""
        return self.root if self.deployment == "cloud" else self.root + self.context

    @property
    def wiki(self) -> str:
        """The path prefix of the web UI, the v1 API and downloads."""
        return "/wiki" if self.deployment == "cloud" else self.context

    # --- shapes ---------------------------------------------------------------------------------------------
    def webui(self, page: Page) -> str:
        if self.deployment == "cloud":
            return f"/spaces/{page.space}/pages/{page.id}/{quote(page.title.replace(' ', '+'), safe='+')}"
        return f"/display/{page.space}/{quote(page.title.replace(' ', '+'), safe='+')}"

    def ancestors(self, page: Page) -> list[Page]:
        chain: list[Page] = []
        parent = self.pages.get(page.parent or "")
        while parent is not None and parent not in chain:
            chain.insert(0, parent)
            parent = self.pages.get(parent.parent or "")
        return chain

    def v2_page(self, page: Page, body: bool = False) -> dict[str, Any]:
        return {
            "id": page.id, "status": page.status, "title": page.title, "spaceId": self.spaces[page.space]["id"],
            "parentId": page.parent, "parentType": "page" if page.parent else None, "position": 0,
            "authorId": "557058:author", "ownerId": "557058:author", "lastOwnerId": None,
            "createdAt": "2026-11-02T09:00:00.000Z",
            "version": {"createdAt": "2026-11-30T10:00:00.000Z", "message": "", "number": page.version,
                        "minorEdit": False, "authorId": "557058:author"},
            "body": {"storage": {"representation": "storage", "value": page.body}} if body else {},
            "_links": {"webui": self.webui(page), "editui": f"/pages/resumedraft.action?draftId={page.id}",
                       "tinyui": f"/x/{page.id}"},
        }

    def restrictions(self, page: Page) -> dict[str, Any]:
        users = [{"type": "known", "accountId": u, "displayName": u} if self.deployment == "cloud"
                 else {"type": "known", "username": u, "userKey": u, "displayName": u} for u in page.read_users]
        groups = [{"type": "group", "name": g, "id": f"g-{g}"} for g in page.read_groups]
        return {"read": {"operation": "read", "restrictions": {
            "user": {"results": users, "start": 0, "limit": 200, "size": len(users)},
            "group": {"results": groups, "start": 0, "limit": 200, "size": len(groups)}},
            "_expandable": {"content": f"/rest/api/content/{page.id}"}}}

    def v1_page(self, page: Page, expand: set[str]) -> dict[str, Any]:
        data: dict[str, Any] = {"id": page.id, "type": "page", "status": page.status, "title": page.title,
                                "_links": {"webui": self.webui(page), "tinyui": f"/x/{page.id}",
                                           "self": f"{self.root}{self.wiki}/rest/api/content/{page.id}"}}
        if "version" in expand:
            data["version"] = {"number": page.version, "when": "2026-11-30T10:00:00.000Z", "minorEdit": False}
        if "ancestors" in expand:
            data["ancestors"] = [{"id": a.id, "type": "page", "status": a.status, "title": a.title}
                                 for a in self.ancestors(page)]
        if "container" in expand:
            data["container"] = {"key": page.space, "name": self.spaces[page.space]["name"], "type": "global"}
        if any(e.startswith("restrictions.read") for e in expand):
            data["restrictions"] = self.restrictions(page)
        if "body.storage" in expand:
            data["body"] = {"storage": {"value": page.body, "representation": "storage"}}
        return data

    def download_link(self, attachment: Attachment) -> str:
        return (f"/download/attachments/{attachment.page}/{quote(attachment.title)}?version={attachment.version}"
                f"&modificationDate=1764496800000&api=v2")

    def v1_attachment(self, attachment: Attachment, expand: set[str]) -> dict[str, Any]:
        page = self.pages[attachment.page]
        data: dict[str, Any] = {
            "id": attachment.id, "type": "attachment", "status": attachment.status, "title": attachment.title,
            "metadata": {"mediaType": attachment.media_type, "comment": ""},
            "extensions": {"mediaType": attachment.media_type, "fileSize": len(attachment.data), "comment": ""},
            "_links": {"webui": f"/pages/viewpageattachments.action?pageId={page.id}",
                       "download": self.download_link(attachment),
                       "self": f"{self.root}{self.wiki}/rest/api/content/{attachment.id}"}}
        if "version" in expand:
            data["version"] = {"number": attachment.version, "when": "2026-11-30T10:00:00.000Z"}
        if "container" in expand:
            data["container"] = {"id": page.id, "type": "page", "status": page.status, "title": page.title}
        return data


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    padded = cursor + "=" * (-len(cursor) % 4)
    return int(json.loads(base64.urlsafe_b64decode(padded))["offset"])


def handler_for(site: FakeConfluence) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes, ctype: str = "application/json",
                 headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            self.send(status, json.dumps(data).encode(), "application/json;charset=UTF-8", headers)

        def v2_error(self, status: int, code: str, title: str) -> None:
            self.json(status, {"errors": [{"status": status, "code": code, "title": title, "detail": None}]})

        def v1_error(self, status: int, message: str) -> None:
            self.json(status, {"statusCode": status, "data": {"authorized": status != 401, "valid": True,
                                                               "errors": [], "successful": False},
                               "message": message, "reason": self.responses[status][0]})

        def authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if site.deployment == "cloud":
                expected = base64.b64encode(f"{site.email}:{site.token}".encode()).decode()
                return header == f"Basic {expected}"
            return header == f"Bearer {site.token}"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            with site._lock:
                site.requests.append(Request("GET", path, query, dict(self.headers.items())))
                for throttle in site.throttles:
                    if path.startswith(throttle[0]) and throttle[1] > 0:
                        throttle[1] -= 1
                        return self.send(429, b"Rate limit exceeded", "text/plain",
                                         {"Retry-After": throttle[2], "X-RateLimit-Reason": "jira-quota-tenant-based"})
            if not self.authorized():
                if path.startswith("/wiki/api/v2"):
                    return self.v2_error(401, "UNAUTHORIZED", "Unauthorized")
                return self.v1_error(401, "This request requires authentication")
            if site.deployment == "cloud" and path.startswith("/wiki/api/v2/"):
                return self.v2(path.removeprefix("/wiki/api/v2"), query)
            if path.startswith(f"{site.wiki}/rest/api/"):
                return self.v1(path.removeprefix(f"{site.wiki}/rest/api"), query)
            if path.startswith(f"{site.wiki}/download/attachments/"):
                return self.download(path.removeprefix(f"{site.wiki}/download/attachments/"), query)
            return self.send(404, b"<html><body>Page not found</body></html>", "text/html")

        # --- Cloud v2 ---------------------------------------------------------------------------------------
        def v2_list(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> None:
            limit = max(1, min(int(query.get("limit", "25")), 250))
            offset = _offset(query.get("cursor"))
            page = items[offset:offset + limit]
            links: dict[str, str] = {"base": f"{site.root}/wiki"}
            headers: dict[str, str] = {}
            if offset + limit < len(items):
                following = {k: v for k, v in query.items() if k != "cursor"}
                following["cursor"] = _cursor(offset + limit)
                following_url = f"/wiki/api/v2{path}?{urlencode(following)}"
                headers["Link"] = f'<{following_url}>; rel="next", <{site.root}/wiki>; rel="base"'
                if site.v2_next_in_body:
                    links["next"] = following_url
            self.json(200, {"results": page, "_links": links}, headers)

        def v2(self, path: str, query: dict[str, str]) -> None:
            if path == "/spaces":
                keys = [k for k in query.get("keys", "").split(",") if k] or list(site.spaces)
                items = [{"id": site.spaces[k]["id"], "key": k, "name": site.spaces[k]["name"], "type": "global",
                          "status": "current", "authorId": "557058:author", "createdAt": "2026-01-01T00:00:00Z",
                          "homepageId": None, "description": None, "icon": None,
                          "_links": {"webui": f"/spaces/{k}"}} for k in keys if k in site.spaces]
                return self.v2_list(path, query, items)
            match = re.fullmatch(r"/spaces/(\d+)/pages", path)
            if match:
                key = next((k for k, s in site.spaces.items() if s["id"] == match.group(1)), None)
                if key is None:
                    return self.v2_error(404, "NOT_FOUND", "Not Found")
                statuses = query.get("status", "current,archived").split(",")
                items = [site.v2_page(p, body=query.get("body-format") == "storage")
                         for p in site.pages.values() if p.space == key and p.status in statuses]
                return self.v2_list(path, query, items)
            match = re.fullmatch(r"/pages/(\d+)", path)
            if match and match.group(1) in site.broken:
                return self.v2_error(500, "INTERNAL_SERVER_ERROR", "Internal Server Error")
            if match:
                found = site.pages.get(match.group(1))
                if found is None or found.status == "trashed":
                    return self.v2_error(404, "NOT_FOUND", "Not Found")
                return self.json(200, site.v2_page(found, body=query.get("body-format") == "storage"))
            return self.v2_error(404, "NOT_FOUND", "Not Found")

        # --- v1 ---------------------------------------------------------------------------------------------
        def v1_list(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> None:
            limit = max(1, min(int(query.get("limit", "25")), 100))
            cloud = site.deployment == "cloud"
            offset = _offset(query.get("cursor")) if cloud else int(query.get("start", "0"))
            page = items[offset:offset + limit]
            links = {"base": f"{site.root}{site.wiki}", "context": site.wiki,
                     "self": f"{site.root}{site.wiki}/rest/api{path}"}
            if offset + limit < len(items):
                following = {k: v for k, v in query.items() if k not in ("cursor", "start", "next")}
                if cloud:
                    following = {"next": "true", "cursor": _cursor(offset + limit), **following}
                else:
                    following["start"] = str(offset + limit)
                links["next"] = f"/rest/api{path}?{urlencode(following)}"
            self.json(200, {"results": page, "start": offset, "limit": limit, "size": len(page), "_links": links})

        def v1(self, path: str, query: dict[str, str]) -> None:
            expand = set(query.get("expand", "").split(","))
            if path == "/content" and site.deployment == "server":
                key = query.get("spaceKey")
                statuses = query.get("status", "current").split(",")
                items = [site.v1_page(p, expand) for p in site.pages.values()
                         if p.space == key and p.status in statuses and query.get("type", "page") == "page"]
                return self.v1_list(path, query, items)
            if path == "/content/search":
                cql = query.get("cql", "")
                match = re.fullmatch(r'space in \(([^)]*)\) AND type in \(([^)]*)\)', cql)
                if match is None:
                    return self.v1_error(400, f"Could not parse cql : {cql}")
                keys = [k.strip().strip('"') for k in match.group(1).split(",")]
                types = [t.strip() for t in match.group(2).split(",")]
                items = []
                if "page" in types:
                    items += [site.v1_page(p, expand) for p in site.pages.values()
                              if p.space in keys and p.status == "current" and p.id not in site.search_lag]
                if "attachment" in types:
                    items += [site.v1_attachment(a, expand) for a in site.attachments.values()
                              if site.pages[a.page].space in keys and a.status == "current"
                              and site.pages[a.page].status != "trashed"]
                return self.v1_list(path, query, items)
            match = re.fullmatch(r"/space/([^/]+)", path)
            if match:
                key = match.group(1)
                if key not in site.spaces:
                    return self.v1_error(404, f"No space with key : {key}")
                return self.json(200, {"id": int(site.spaces[key]["id"]), "key": key,
                                       "name": site.spaces[key]["name"], "type": "global"})
            match = re.fullmatch(r"/content/(\d+)/restriction/byOperation/read", path)
            if match:
                found = site.pages.get(match.group(1))
                if found is None:
                    return self.v1_error(404, f"No content found with id : ContentId{{id={match.group(1)}}}")
                read = site.restrictions(found)["read"]
                return self.json(200, {**read, "content": {"id": found.id, "type": "page", "title": found.title},
                                       "_links": {"base": f"{site.root}{site.wiki}", "context": site.wiki}})
            match = re.fullmatch(r"/content/(\d+)", path)
            if match:
                found = site.pages.get(match.group(1))
                if found is None or found.status == "trashed":
                    return self.v1_error(404, f"No content found with id : ContentId{{id={match.group(1)}}}")
                return self.json(200, site.v1_page(found, expand | {"version"}))
            return self.v1_error(404, "null for uri")

        def download(self, rest: str, query: dict[str, str]) -> None:
            page_id, _, filename = rest.partition("/")
            found = next((a for a in site.attachments.values() if a.page == page_id and a.title == filename
                          and a.status == "current"), None)
            if found is None:
                return self.send(404, b"<html><body>Not found</body></html>", "text/html")
            return self.send(200, found.data, found.media_type,
                             {"Content-Disposition": f'attachment; filename="{quote(found.title)}"'})

    return Handler


@contextmanager
def start_fake_confluence(deployment: str = "cloud") -> Iterator[FakeConfluence]:
    """A fake Confluence site on a free port of 127.0.0.1; ``base_url`` is what a source's ``base_url`` is
    (Server: with its context path)."""
    site = FakeConfluence(deployment=deployment)
    with serving(handler_for(site)) as port:
        site.root = f"http://127.0.0.1:{port}"
        yield site
