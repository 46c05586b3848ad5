"""A local fake of Microsoft Graph (SharePoint sites, OneDrive) and of the Microsoft Entra ID token endpoint, over
real HTTPS on 127.0.0.1.

MSAL only accepts ``https://`` authorities, so the server speaks TLS with a certificate for 127.0.0.1 signed by a
throw-away CA (``fake.ca_file``: give it to the source as ``ca_file``). One server answers both roles:

- Entra ID: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (MSAL's tenant discovery; an unknown tenant is
  ``400 invalid_tenant``) and ``POST /{tenant}/oauth2/v2.0/token`` (``grant_type=client_credentials``; a wrong
  client id or secret is ``401 invalid_client`` with an AADSTS code, as the real service answers).
- Graph under ``/v1.0`` (``fake.graph_url``), every call checked for ``Authorization: Bearer`` with an issued token
  (``401 InvalidAuthenticationToken`` otherwise), errors in Graph's ``{"error": {"code", "message",
  "innerError"}}`` shape:
  ``GET /sites/{hostname}:/{path}``, ``GET /sites/{id}/drives``, ``GET /users/{upn}/drive``,
  ``GET /drives/{id}/root/delta`` (pages of ``page_size`` items joined by ``@odata.nextLink``, the last page with
  ``@odata.deltaLink``; the latest state of each changed item, deleted ones with the ``deleted`` facet and
  without ``name``; no ``cTag``, as OneDrive for Business omits it from delta; an expired token is
  ``410 Gone`` ``resyncRequired`` with a ``Location`` that restarts the enumeration),
  ``GET /drives/{id}/items/{id}/content`` (``302`` to a pre-authenticated download URL on this server, served
  without a bearer token), ``GET /drives/{id}/items/{id}/permissions``,
  ``GET /sites/{id}/pages/microsoft.graph.sitePage`` (paged) and
  ``GET /sites/{id}/pages/{id}/microsoft.graph.sitePage?$expand=canvasLayout``.
- ``fake.deny = True``: every Graph call answers ``403 accessDenied`` (permissions or consent removed).
- ``fake.token_delay_s``: the token endpoint answers after that long (also the Bot Framework's outbound token:
  tests/bot/teams/test_credentials.py).
- ``fake.throttle(path_part, times, retry_after)``: the next ``times`` Graph calls whose path contains
  ``path_part`` answer ``429 TooManyRequests`` with ``Retry-After``.

The model (sites, drives, items, pages, permissions) is mutable between syncs; every request is recorded in
``fake.requests`` (method, path with query, headers).

    with start_fake_graph(tmp_path) as graph:
        site = graph.add_site("acme.sharepoint.com", "/sites/HR", "HR")
        docs = graph.add_drive(site, "Documents")
        folder = graph.add_folder(docs, "Policies")
        graph.add_file(docs, "Leave.docx", data, parent=folder)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.fakes.http_server import serving

TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CLIENT_SECRET = "fake~client~secret~value~0123456789"

_MIME = {".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         ".pdf": "application/pdf", ".md": "text/markdown", ".txt": "text/plain", ".html": "text/html",
         ".png": "image/png", ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@dataclass
class Item:
    id: str
    name: str
    parent: str | None  # parent item id (None for the root)
    folder: bool = False
    content: bytes = b""
    etag_n: int = 1
    seq: int = 0  # the change number of its latest change (delta)
    deleted: bool = False
    shared: str | None = None  # the shared facet's scope: "users" | "organization" | "anonymous"
    permissions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Drive:
    id: str
    name: str
    web_url: str
    drive_type: str = "documentLibrary"
    items: dict[str, Item] = field(default_factory=dict)
    #: Delta tokens minted before this change number are answered 410 Gone (``expire_delta_tokens``).
    oldest_valid_seq: int = 0

    @property
    def root(self) -> Item:
        return self.items["root-" + self.id]


@dataclass
class Page:
    id: str
    name: str  # Title.aspx
    title: str
    html_parts: list[str]  # the textWebParts' innerHtml, in order
    folder: str = ""  # a folder of the Site Pages library ("" = top)
    etag_n: int = 1
    level: str = "published"
    version: str = "1.0"
    modified: str = "2026-11-30T10:00:00Z"


@dataclass
class Site:
    id: str
    hostname: str
    path: str
    name: str
    drives: list[Drive] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    @property
    def web_url(self) -> str:
        return f"https://{self.hostname}{self.path}"


@dataclass
class Request:
    method: str
    path: str  # with the query string
    headers: dict[str, str]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGraph:
    def __init__(self, ca_file: Path) -> None:
        self.ca_file = ca_file
        self.base = ""
        self.tenant_id, self.client_id, self.client_secret = TENANT_ID, CLIENT_ID, CLIENT_SECRET
        self.sites: dict[str, Site] = {}  # site id -> site
        self.user_drives: dict[str, Drive] = {}  # user principal name -> OneDrive
        self.drives: dict[str, Drive] = {}
        self.tokens: set[str] = set()
        self.downloads: dict[str, tuple[str, str]] = {}  # tempauth -> (drive id, item id)
        self.requests: list[Request] = []
        self.page_size = 2
        #: Graph answers 403 accessDenied to every call (the app's permissions or their admin consent removed).
        self.deny = False
        #: the token endpoint answers after this long (a slow or struggling Entra ID)
        self.token_delay_s = 0.0
        self._throttles: list[list[Any]] = []  # [path part, times left, retry after]
        self._seq = itertools.count(1)
        self.seq = 0
        self.lock = threading.Lock()

    # --- endpoints --------------------------------------------------------------------------------------------
    @property
    def graph_url(self) -> str:
        return f"{self.base}/v1.0"

    @property
    def authority_url(self) -> str:
        return self.base

    # --- the model --------------------------------------------------------------------------------------------
    def _next(self) -> int:
        self.seq = next(self._seq)
        return self.seq

    def add_site(self, hostname: str, path: str, name: str) -> Site:
        site = Site(id=f"{hostname},{uuid.uuid4()},{uuid.uuid4()}", hostname=hostname, path=path, name=name)
        self.sites[site.id] = site
        return site

    def _new_drive(self, name: str, web_url: str, drive_type: str) -> Drive:
        drive = Drive(id="b!" + secrets.token_urlsafe(24), name=name, web_url=web_url, drive_type=drive_type)
        root = Item(id="root-" + drive.id, name="root", parent=None, folder=True, seq=self._next())
        drive.items[root.id] = root
        self.drives[drive.id] = drive
        return drive

    def add_drive(self, site: Site, name: str) -> Drive:
        folder = "Shared%20Documents" if name == "Documents" else quote(name)
        drive = self._new_drive(name, f"{site.web_url}/{folder}", "documentLibrary")
        site.drives.append(drive)
        return drive

    def add_user_drive(self, upn: str) -> Drive:
        personal = upn.replace("@", "_").replace(".", "_")
        drive = self._new_drive("OneDrive", f"https://acme-my.sharepoint.com/personal/{personal}/Documents",
                                "business")
        self.user_drives[upn.lower()] = drive
        return drive

    def add_folder(self, drive: Drive, name: str, parent: Item | None = None) -> Item:
        item = Item(id=uuid.uuid4().hex[:16].upper(), name=name, parent=(parent or drive.root).id, folder=True,
                    seq=self._next())
        drive.items[item.id] = item
        return item

    def add_file(self, drive: Drive, name: str, content: bytes, parent: Item | None = None,
                 shared: str | None = None, permissions: list[dict[str, Any]] | None = None) -> Item:
        item = Item(id=uuid.uuid4().hex[:16].upper(), name=name, parent=(parent or drive.root).id,
                    content=content, seq=self._next(), shared=shared, permissions=list(permissions or []))
        drive.items[item.id] = item
        return item

    def edit(self, item: Item, content: bytes) -> None:
        item.content = content
        item.etag_n += 1
        item.seq = self._next()

    def rename(self, item: Item, name: str) -> None:
        """Renaming a folder changes the folder only: delta does not return its descendants."""
        item.name = name
        item.etag_n += 1
        item.seq = self._next()

    def delete(self, drive: Drive, item: Item) -> None:
        """To the recycle bin: the item (and, for a folder, every descendant) shows in delta as deleted."""
        stack = [item]
        while stack:
            current = stack.pop()
            current.deleted = True
            current.seq = self._next()
            stack.extend(i for i in drive.items.values() if i.parent == current.id and not i.deleted)

    def share(self, item: Item, scope: str | None, permissions: list[dict[str, Any]] | None = None) -> None:
        item.shared = scope
        item.permissions = list(permissions or [])
        item.seq = self._next()

    def expire_delta_tokens(self, drive: Drive) -> None:
        drive.oldest_valid_seq = self.seq + 1

    def add_page(self, site: Site, title: str, html_parts: list[str], folder: str = "", level: str = "published",
                 version: str = "1.0") -> Page:
        page = Page(id=str(uuid.uuid4()), name=f"{title}.aspx", title=title, html_parts=html_parts, folder=folder,
                    level=level, version=version)
        site.pages.append(page)
        return page

    def edit_page(self, page: Page, html_parts: list[str]) -> None:
        page.html_parts = html_parts
        page.etag_n += 1
        page.modified = _now()

    def throttle(self, path_part: str, times: int = 1, retry_after: int = 3) -> None:
        self._throttles.append([path_part, times, retry_after])

    def served(self, part: str, method: str = "GET") -> list[Request]:
        return [r for r in self.requests if r.method == method and part in r.path]

    # --- JSON shapes ------------------------------------------------------------------------------------------
    def item_path(self, drive: Drive, item: Item) -> str:
        names: list[str] = []
        current: Item | None = item
        while current is not None and current.parent is not None:
            names.append(current.name)
            current = drive.items.get(current.parent)
        return "/".join(reversed(names))

    def item_json(self, drive: Drive, item: Item, *, in_delta: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"id": item.id, "eTag": f'"{{{item.id}}},{item.etag_n}"'}
        if item.deleted:
            data["deleted"] = {"state": "deleted"}
            data["parentReference"] = {"driveId": drive.id, "driveType": drive.drive_type, "id": item.parent}
            if item.folder:
                data["folder"] = {"childCount": 0}
            else:
                data["file"] = {}
            return data
        data.update({"name": item.name, "lastModifiedDateTime": _now(), "createdDateTime": _now(),
                     "webUrl": f"{drive.web_url}/{quote(self.item_path(drive, item))}" if item.parent
                     else drive.web_url})
        if not in_delta:
            data["cTag"] = f'"c:{{{item.id}}},{item.etag_n}"'
        if item.parent is None:
            data["root"] = {}
            data["name"] = "root"
        else:
            data["parentReference"] = {"driveId": drive.id, "driveType": drive.drive_type, "id": item.parent}
        if item.folder:
            data["folder"] = {"childCount": sum(1 for i in drive.items.values()
                                                if i.parent == item.id and not i.deleted)}
            data["size"] = 0
        else:
            suffix = Path(item.name).suffix.lower()
            data["file"] = {"mimeType": _MIME.get(suffix, "application/octet-stream"), "hashes": {}}
            data["size"] = len(item.content)
        if item.shared:
            data["shared"] = {"scope": item.shared}
        return data

    def page_json(self, site: Site, page: Page, *, canvas: bool = False) -> dict[str, Any]:
        folder = f"{quote(page.folder)}/" if page.folder else ""
        data: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.sitePage", "id": page.id, "name": page.name, "title": page.title,
            "webUrl": f"{site.web_url}/SitePages/{folder}{quote(page.name)}",
            "eTag": f'"{{{page.id.upper()}}},{page.etag_n}"', "lastModifiedDateTime": page.modified,
            "pageLayout": "article", "promotionKind": "page",
            "publishingState": {"level": page.level, "versionId": page.version},
            "parentReference": {"siteId": site.id},
        }
        if canvas:
            columns = [{"id": str(n), "width": 12, "webparts": [
                {"@odata.type": "#microsoft.graph.textWebPart", "id": str(uuid.uuid4()), "innerHtml": html}]}
                for n, html in enumerate(page.html_parts, start=1)]
            data["canvasLayout"] = {"horizontalSections": [
                {"id": "1", "layout": "oneColumn", "emphasis": "none", "columns": columns[:1]},
                {"id": "2", "layout": "oneColumn", "emphasis": "soft", "columns": columns[1:]},
            ] if len(columns) > 1 else [{"id": "1", "layout": "oneColumn", "emphasis": "none", "columns": columns}],
                "verticalSection": {"emphasis": "none", "webparts": [
                    {"@odata.type": "#microsoft.graph.standardWebPart", "id": str(uuid.uuid4()),
                     "webPartType": "d1d91016-032f-456d-98a4-721247c305e8",
                     "data": {"title": "Image", "properties": {"imageSourceType": 2}}}]}}
        return data


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": _now(), "request-id": str(uuid.uuid4()),
                                     "client-request-id": str(uuid.uuid4())}}}


def handler_for(fake: FakeGraph) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            self.send(status, json.dumps(data).encode(),
                      {"Content-Type": "application/json; odata.metadata=minimal", **(headers or {})})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            fake.requests.append(Request("POST", self.path, dict(self.headers.items())))
            parts = urlsplit(self.path).path.strip("/").split("/")
            if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                return self.token(parts[0], {k: v[0] for k, v in parse_qs(body).items()})
            return self.json(404, {"error": "not_found"})

        def token(self, tenant: str, form: dict[str, str]) -> None:
            time.sleep(fake.token_delay_s)
            if tenant != fake.tenant_id:
                return self.json(400, {"error": "invalid_tenant", "error_codes": [90002],
                                       "error_description": f"AADSTS90002: Tenant '{tenant}' not found."})
            if form.get("grant_type") != "client_credentials" or not form.get("scope", "").endswith("/.default"):
                return self.json(400, {"error": "invalid_request", "error_codes": [90014],
                                       "error_description": "AADSTS90014: The request body must contain "
                                                            "grant_type and scope."})
            if form.get("client_id") != fake.client_id:
                return self.json(400, {"error": "unauthorized_client", "error_codes": [700016],
                                       "error_description": f"AADSTS700016: Application with identifier "
                                                            f"'{form.get('client_id')}' was not found in the "
                                                            f"directory."})
            if form.get("client_secret") != fake.client_secret:
                return self.json(401, {"error": "invalid_client", "error_codes": [7000215],
                                       "error_description": "AADSTS7000215: Invalid client secret provided. "
                                                            "Ensure the secret being sent in the request is the "
                                                            "client secret value, not the client secret ID."})
            token = "eyJ0eXAi." + secrets.token_urlsafe(24)
            fake.tokens.add(token)
            return self.json(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                   "access_token": token})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            fake.requests.append(Request("GET", self.path, dict(self.headers.items())))
            split = urlsplit(self.path)
            path, query = unquote(split.path), {k: v[0] for k, v in parse_qs(split.query).items()}
            with fake.lock:
                if path.endswith("/v2.0/.well-known/openid-configuration"):
                    return self.openid(path.strip("/").split("/")[0])
                if path.startswith("/_download/"):
                    target = fake.downloads.get(query.get("tempauth", ""))
                    drive = fake.drives.get(target[0]) if target else None
                    item = drive.items.get(target[1]) if drive and target else None
                    if item is None or item.deleted:
                        return self.send(401 if target is None else 404, b"", {})
                    return self.send(200, item.content, {"Content-Type": "application/octet-stream"})
                if not path.startswith("/v1.0/"):
                    return self.json(404, _error("itemNotFound", "not found"))
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in fake.tokens:
                    return self.json(401, _error("InvalidAuthenticationToken", "Access token validation failure. "
                                                 "Invalid audience."))
                if fake.deny:
                    return self.json(403, _error("accessDenied", "Either scp or roles claim need to be present in "
                                                                  "the token."))
                for throttle in fake._throttles:
                    if throttle[1] > 0 and throttle[0] in path:
                        throttle[1] -= 1
                        return self.json(429, _error("TooManyRequests", "Too many requests"),
                                         {"Retry-After": str(throttle[2])})
                return self.graph(path[len("/v1.0"):], query)

        def openid(self, tenant: str) -> None:
            if tenant != fake.tenant_id:
                return self.json(400, {"error": "invalid_tenant", "error_codes": [90002],
                                       "error_description": f"AADSTS90002: Tenant '{tenant}' not found."})
            base = f"{fake.base}/{tenant}"
            return self.json(200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                                   "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                                   "issuer": f"{fake.base}/{tenant}/v2.0",
                                   "jwks_uri": f"{fake.base}/{tenant}/discovery/v2.0/keys",
                                   "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                                             "private_key_jwt"]})

        def graph(self, path: str, query: dict[str, str]) -> None:  # noqa: C901, PLR0911, PLR0912 - a router
            parts = path.strip("/").split("/")
            if parts[0] == "sites" and len(parts) >= 2 and ":" in parts[1]:
                hostname = parts[1].split(":")[0]
                site_path = "/" + "/".join(parts[2:]).rstrip(":")
                for site in fake.sites.values():
                    if site.hostname == hostname and site.path.lower() == site_path.lower():
                        return self.json(200, {"id": site.id, "name": site.path.rsplit("/", 1)[-1],
                                               "displayName": site.name, "webUrl": site.web_url,
                                               "siteCollection": {"hostname": site.hostname}})
                return self.json(404, _error("itemNotFound", "Requested site could not be found"))
            if parts[0] == "sites" and len(parts) >= 3:
                site = fake.sites.get(parts[1])
                if site is None:
                    return self.json(404, _error("itemNotFound", "Requested site could not be found"))
                if parts[2] == "drives" and len(parts) == 3:
                    return self.json(200, {"value": [{"id": d.id, "name": d.name, "driveType": d.drive_type,
                                                      "webUrl": d.web_url} for d in site.drives]})
                if parts[2] == "pages" and parts[-1] == "microsoft.graph.sitePage":
                    if len(parts) == 4:
                        return self.list_pages(site, query)
                    page = next((p for p in site.pages if p.id == parts[3]), None)
                    if page is None:
                        return self.json(404, _error("itemNotFound", "The page was not found"))
                    return self.json(200, fake.page_json(site, page, canvas=query.get("$expand") == "canvasLayout"))
            if parts[0] == "users" and len(parts) == 3 and parts[2] == "drive":
                drive = fake.user_drives.get(parts[1].lower())
                if drive is None:
                    return self.json(404, _error("itemNotFound", "The user's OneDrive could not be found"))
                return self.json(200, {"id": drive.id, "name": drive.name, "driveType": drive.drive_type,
                                       "webUrl": drive.web_url})
            if parts[0] == "drives" and len(parts) >= 3:
                drive = fake.drives.get(parts[1])
                if drive is None:
                    return self.json(404, _error("itemNotFound", "The drive could not be found"))
                if parts[2:4] == ["root", "delta"]:
                    return self.delta(drive, query)
                if parts[2] == "items" and len(parts) == 5:
                    item = drive.items.get(parts[3])
                    if item is None or item.deleted:
                        return self.json(404, _error("itemNotFound", "The resource could not be found."))
                    if parts[4] == "content":
                        tempauth = secrets.token_urlsafe(16)
                        fake.downloads[tempauth] = (drive.id, item.id)
                        return self.send(302, b"", {"Location": f"{fake.base}/_download/{drive.id}/{item.id}"
                                                                f"?UniqueId={item.id}&tempauth={tempauth}"})
                    if parts[4] == "permissions":
                        return self.json(200, {"value": item.permissions})
            return self.json(400, _error("invalidRequest", f"Invalid request: {path}"))

        def list_pages(self, site: Site, query: dict[str, str]) -> None:
            start = int(query.get("$skiptoken", "0"))
            chunk = site.pages[start:start + fake.page_size]
            data: dict[str, Any] = {"value": [fake.page_json(site, p) for p in chunk]}
            if start + fake.page_size < len(site.pages):
                data["@odata.nextLink"] = (f"{fake.graph_url}/sites/{site.id}/pages/microsoft.graph.sitePage"
                                           f"?$skiptoken={start + fake.page_size}")
            return self.json(200, data)

        def delta(self, drive: Drive, query: dict[str, str]) -> None:
            # Tokens: "n.<offset>" continues a fresh enumeration, "d.<change number>.<offset>" lists the changes
            # after that change number (deletions included).
            kind, since, offset = "n", 0, 0
            if query.get("token"):
                fields = query["token"].split(".")
                kind = fields[0]
                if kind == "d":
                    since, offset = int(fields[1]), int(fields[2])
                    if since < drive.oldest_valid_seq:
                        restart = f"{fake.graph_url}/drives/{drive.id}/root/delta"
                        return self.json(410, {"error": {
                            "code": "resyncRequired",
                            "message": "Resync required. Replace any local items with the server's version "
                                       "(including deletes) if you're sure that the service was up to date with "
                                       "your local changes when you last sync'd.",
                            "innerError": {"code": "resyncChangesApplyDifferences"}}}, {"Location": restart})
                else:
                    offset = int(fields[1])
            if kind == "n":
                items = sorted((i for i in drive.items.values() if not i.deleted),
                               key=lambda i: (self._depth(drive, i), i.seq))
            else:
                items = sorted((i for i in drive.items.values() if i.seq > since), key=lambda i: i.seq)
            chunk = items[offset:offset + fake.page_size]
            data: dict[str, Any] = {"value": [fake.item_json(drive, i, in_delta=True) for i in chunk]}
            link = f"{fake.graph_url}/drives/{drive.id}/root/delta"
            if offset + fake.page_size < len(items):
                nxt = f"d.{since}.{offset + fake.page_size}" if kind == "d" else f"n.{offset + fake.page_size}"
                data["@odata.nextLink"] = f"{link}?token={nxt}"
            else:
                data["@odata.deltaLink"] = f"{link}?token=d.{fake.seq}.0"
            return self.json(200, data)

        @staticmethod
        def _depth(drive: Drive, item: Item) -> int:
            depth, current = 0, item
            while current.parent is not None and current.parent in drive.items:
                depth += 1
                current = drive.items[current.parent]
            return depth

    return Handler


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Deskmate test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


@contextmanager
def start_fake_graph(folder: Path) -> Iterator[FakeGraph]:
    """The fake on a free port of 127.0.0.1 (HTTPS; its CA certificate written to ``folder``)."""
    ca_file, cert_file, key_file = _certificates(folder)
    fake = FakeGraph(ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    with serving(handler_for(fake), tls=context) as port:
        fake.base = f"https://127.0.0.1:{port}"
        yield fake
