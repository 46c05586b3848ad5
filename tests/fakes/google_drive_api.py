"""A local fake of Google's OAuth token endpoint and of the Drive API v3, spoken over real HTTP on 127.0.0.1.

Point a service account key's ``token_uri`` at ``fake.token_uri`` and the connector's ``api_url`` at ``fake.url``.
What it speaks, as Google documents it:

- ``POST /token``: the JWT-bearer grant (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``,
  ``assertion=<RS256 JWT>``). The signature is checked against the public key registered with
  :meth:`FakeDrive.add_service_account`, and the claims (``iss``, ``aud`` = ``https://oauth2.googleapis.com/token``, ``scope``, ``exp``,
  optional ``sub``). Answers ``{"access_token", "expires_in", "token_type": "Bearer"}``, or ``400
  {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}``.
- ``GET /drive/v3/files`` (files.list: ``q`` of the form ``'<id>' in parents and trashed=false``, ``pageSize``,
  ``pageToken`` / ``nextPageToken``, ``fields`` partial responses, ``corpora=drive`` + ``driveId`` +
  ``includeItemsFromAllDrives`` + ``supportsAllDrives`` for shared drives), ``GET /drive/v3/files/<id>``
  (metadata, or the content with ``alt=media``; a Google Docs file answers 403 ``fileNotDownloadable``),
  ``GET /drive/v3/files/<id>/export?mimeType=`` (403 ``exportSizeLimitExceeded`` for a file marked too large),
  ``GET /drive/v3/files/<id>/permissions``, ``GET /drive/v3/changes/startPageToken`` and ``GET /drive/v3/changes``
  (``changes[]`` of ``{fileId, removed, time, file}``, ``nextPageToken`` / ``newStartPageToken``).
- Errors are Google's JSON ``{"error": {"code", "message", "errors": [{"domain", "reason", "message"}]}}``; a
  missing or unknown bearer token is ``401 authError``; an item of a shared drive is invisible (404) without
  ``supportsAllDrives=true``; ``permissions`` is not filled for shared-drive items (``permissionIds`` is).
- :meth:`FakeDrive.expire_tokens_at` makes the issued tokens expire mid-sync (401). :meth:`FakeDrive.throttle`
  answers the next calls with ``429 rateLimitExceeded`` or ``403 userRateLimitExceeded`` and a ``Retry-After``.

The model (folders, files, permissions, trash, moves) is changed by the test between syncs; every change is
recorded in the changes log, and every request in :attr:`FakeDrive.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.http_server import serving

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience Google requires in the assertion, whatever token endpoint it is posted to.
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
EXPORT_LIMIT = 10 * 1024 * 1024
_LINKS = {DOC: "https://docs.google.com/document/d/{id}/edit?usp=drivesdk",
          SHEET: "https://docs.google.com/spreadsheets/d/{id}/edit?usp=drivesdk",
          SLIDES: "https://docs.google.com/presentation/d/{id}/edit?usp=drivesdk",
          FOLDER: "https://drive.google.com/drive/folders/{id}"}


def generate_key() -> tuple[str, str]:
    """A fresh RSA key pair as PEM: (private key, public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class Item:
    id: str
    name: str
    mime_type: str
    parent: str | None
    content: bytes = b""  # a binary file's bytes, or a Google file's export (as exported to export_type)
    export_type: str | None = None
    drive_id: str | None = None
    trashed: bool = False
    permissions: list[dict[str, Any]] = field(default_factory=list)
    modified: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    version: int = 1
    export_too_large: bool = False
    gone: bool = False  # deleted for good (or access lost): changes say removed=true

    def resource(self, *, shared_drive_view: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime_type,
            "parents": [self.parent] if self.parent else [], "trashed": self.trashed,
            "modifiedTime": self.modified.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "version": str(self.version),
            "webViewLink": _LINKS.get(self.mime_type, "https://drive.google.com/file/d/{id}/view?usp=drivesdk")
            .format(id=self.id),
            "permissionIds": [p["id"] for p in self.permissions],
        }
        if not self.mime_type.startswith("application/vnd.google-apps."):
            data["md5Checksum"] = hashlib.md5(self.content).hexdigest()  # noqa: S324 - Drive's own checksum
            data["size"] = str(len(self.content))
        if self.drive_id:
            data["driveId"] = self.drive_id
        if not shared_drive_view:  # "Not populated for items in shared drives."
            data["permissions"] = [dict(p) for p in self.permissions]
        return data


def select(data: Any, fields: str) -> Any:
    """Google's partial response: ``fields=nextPageToken,files(id,name,permissions(id,type))``."""
    if not fields or fields == "*":
        return data
    spec = _parse_fields(fields)
    return _apply_fields(data, spec)


def _parse_fields(text: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    i = 0

    def parse(end: str | None) -> dict[str, Any]:
        nonlocal i
        out: dict[str, Any] = {}
        name = ""
        while i < len(text):
            ch = text[i]
            i += 1
            if ch == "(":
                out[name.strip()] = parse(")")
                name = ""
            elif ch == ",":
                if name.strip():
                    out[name.strip()] = {}
                name = ""
            elif ch == ")" and end == ")":
                break
            else:
                name += ch
        if name.strip():
            out[name.strip()] = {}
        return out

    spec = parse(None)
    return spec


def _apply_fields(data: Any, spec: dict[str, Any]) -> Any:
    if isinstance(data, list):
        return [_apply_fields(d, spec) for d in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for key, sub in spec.items():
        head, _, rest = key.partition("/")
        if head in data:
            value = data[head]
            out[head] = _apply_fields(value, {rest: sub} if rest else sub) if (sub or rest) else value
    return out


class FakeDrive:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.accounts: dict[str, str] = {}  # client_email -> public key PEM
        self.tokens: dict[str, tuple[str, str | None, float]] = {}  # access token -> (email, subject, expiry)
        self.token_requests: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str], float]] = []  # (method, path, query, time)
        self.changes: list[tuple[int, str, datetime]] = []  # (change number, file id, time)
        self._counter = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._throttled: list[tuple[str, int, str, str | None]] = []  # (path prefix, status, reason, retry after)
        self._pages: dict[str, Any] = {}
        self._expire_at = ""
        self.url = ""

    # --- addresses --------------------------------------------------------------------------------------------
    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # --- the model --------------------------------------------------------------------------------------------
    def add_service_account(self, email: str, public_key_pem: str) -> None:
        self.accounts[email] = public_key_pem

    def _new_id(self, name: str) -> str:
        return f"1{slug_id(name)}{next(self._ids):04d}xYz"

    def _touch(self, item: Item) -> None:
        item.modified = datetime.now(timezone.utc) + timedelta(milliseconds=next(self._ids))
        item.version += 1
        self.changes.append((next(self._counter), item.id, item.modified))

    def folder(self, name: str, parent: str | None = None, *, drive_id: str | None = None,
               id: str | None = None) -> str:  # noqa: A002 - Drive's name
        item = Item(id or self._new_id(name), name, FOLDER, parent, drive_id=drive_id)
        self.items[item.id] = item
        self._touch(item)
        return item.id

    def add(self, name: str, parent: str, mime_type: str, content: bytes, *, export_type: str | None = None,
            permissions: list[dict[str, Any]] | None = None, drive_id: str | None = None) -> str:
        item = Item(self._new_id(name), name, mime_type, parent, content=content, export_type=export_type,
                    drive_id=drive_id, permissions=list(permissions or []))
        self.items[item.id] = item
        self._touch(item)
        return item.id

    def edit(self, file_id: str, content: bytes) -> None:
        self.items[file_id].content = content
        self._touch(self.items[file_id])

    def rename(self, file_id: str, name: str) -> None:
        self.items[file_id].name = name
        self._touch(self.items[file_id])

    def move(self, file_id: str, parent: str) -> None:
        self.items[file_id].parent = parent
        self._touch(self.items[file_id])

    def share(self, file_id: str, permissions: list[dict[str, Any]]) -> None:
        """Replace the file's permissions (its version changes, its modifiedTime does not: as Drive does)."""
        item = self.items[file_id]
        item.permissions = list(permissions)
        item.version += 1
        self.changes.append((next(self._counter), item.id, datetime.now(timezone.utc)))

    def trash(self, file_id: str) -> None:
        """Trash an item (a folder: with everything below it, each reported as a change)."""
        for item in [self.items[file_id], *self._below(file_id)]:
            item.trashed = True
            self._touch(item)

    def delete(self, file_id: str) -> None:
        """Delete for good (or lose access): the changes list says ``removed: true`` without a file."""
        self.items[file_id].gone = True
        self.changes.append((next(self._counter), file_id, datetime.now(timezone.utc)))

    def _below(self, folder_id: str) -> list[Item]:
        out = []
        for item in self.items.values():
            if item.parent == folder_id:
                out.append(item)
                if item.mime_type == FOLDER:
                    out.extend(self._below(item.id))
        return out

    def throttle(self, path_prefix: str, *, status: int = 429, reason: str = "rateLimitExceeded",
                 retry_after: str | None = "1", times: int = 1) -> None:
        """The next ``times`` requests whose path starts with ``path_prefix`` answer ``status`` with ``reason``."""
        self._throttled.extend([(path_prefix, status, reason, retry_after)] * times)

    def expire_tokens_at(self, path_prefix: str) -> None:
        """Every access token issued so far expires when the next request for ``path_prefix`` arrives (it is
        answered 401, as Google answers an expired or revoked token)."""
        self._expire_at = path_prefix

    def served(self, path_prefix: str = "", **query: str) -> list[tuple[str, str, dict[str, str], float]]:
        return [r for r in self.requests if r[1].startswith(path_prefix)
                and all(r[2].get(k) == v for k, v in query.items())]

    # --- the protocol -----------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append((method, path, query, time.monotonic()))
            for i, (prefix, status, reason, retry_after) in enumerate(self._throttled):
                if path.startswith(prefix):
                    del self._throttled[i]
                    extra = {"Retry-After": retry_after} if retry_after else {}
                    message = "Rate Limit Exceeded" if reason == "rateLimitExceeded" else "User Rate Limit Exceeded"
                    return self._error(status, reason, message, domain="usageLimits", headers=extra)
            if method == "POST" and path == "/token":
                return self._token(body)
            if method != "GET" or not path.startswith("/drive/v3/"):
                return self._error(404, "notFound", "Not Found")
            if self._expire_at and path.startswith(self._expire_at):
                self._expire_at = ""
                self.tokens.clear()
            auth = headers.get("authorization", "")
            grant = self.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
            if grant is None or grant[2] < time.time():
                return self._error(401, "authError", "Invalid Credentials", location="Authorization",
                                   headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
            return self._drive(path.removeprefix("/drive/v3"), query)

    @staticmethod
    def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}, json.dumps(data).encode()

    def _error(self, status: int, reason: str, message: str, *, domain: str = "global", location: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        error: dict[str, Any] = {"domain": domain, "reason": reason, "message": message}
        if location:
            error.update(locationType="header" if location == "Authorization" else "parameter", location=location)
        return self._json(status, {"error": {"code": status, "message": message, "errors": [error]}}, headers)

    def _token(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER or "assertion" not in form:
            return self._json(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        try:
            header_b64, claims_b64, signature_b64 = form["assertion"].split(".")
            claims = json.loads(_b64decode(claims_b64))
            header = json.loads(_b64decode(header_b64))
        except ValueError:
            return self._json(400, {"error": "invalid_grant", "error_description": "Invalid JWT."})
        self.token_requests.append({"header": header, "claims": claims})
        public_pem = self.accounts.get(str(claims.get("iss")))
        if public_pem is None:
            return self._json(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
        public_key = serialization.load_pem_public_key(public_pem.encode())
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(_b64decode(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(),
                              hashes.SHA256())
        except InvalidSignature:
            return self._json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        now = time.time()
        if header.get("alg") != "RS256" or claims.get("aud") != TOKEN_AUDIENCE or not (
                claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0) + 300):
            return self._json(400, {"error": "invalid_grant",
                                    "error_description": "Invalid JWT: Token must be a short-lived token"})
        if "https://www.googleapis.com/auth/drive.readonly" not in str(claims.get("scope", "")).split():
            return self._json(400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."})
        token = "ya29." + secrets.token_urlsafe(24)
        self.tokens[token] = (str(claims["iss"]), claims.get("sub"), now + 3599)
        return self._json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _visible(self, item: Item | None, query: dict[str, str]) -> bool:
        if item is None or item.gone:
            return False
        return not item.drive_id or query.get("supportsAllDrives") == "true"

    def _drive(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        fields = query.get("fields", "")
        if path == "/files":
            return self._list(query)
        if path == "/changes/startPageToken":
            return self._json(200, select({"kind": "drive#startPageToken",
                                           "startPageToken": str(self._next_change())}, fields))
        if path == "/changes":
            return self._changes(query)
        match = re.fullmatch(r"/files/([^/]+)(/export|/permissions)?", path)
        if not match:
            return self._error(404, "notFound", "Not Found")
        item = self.items.get(match.group(1))
        # files.export has no supportsAllDrives parameter: it exports shared-drive files without it
        if not self._visible(item, {**query, "supportsAllDrives": "true"} if match.group(2) == "/export" else query):
            return self._error(404, "notFound", f"File not found: {match.group(1)}.", location="fileId")
        assert item is not None
        if match.group(2) == "/export":
            return self._export(item, query)
        if match.group(2) == "/permissions":
            perms = [dict(p) for p in item.permissions]
            return self._json(200, select({"kind": "drive#permissionList", "permissions": perms}, fields))
        if query.get("alt") == "media":
            if item.mime_type.startswith("application/vnd.google-apps."):
                return self._error(403, "fileNotDownloadable", "Only files with binary content can be downloaded. "
                                   "Use Export with Docs Editors files.", location="alt")
            return 200, {"Content-Type": item.mime_type}, item.content
        resource = item.resource(shared_drive_view=bool(item.drive_id))
        return self._json(200, select(resource, fields or "kind,id,name,mimeType"))

    def _next_change(self) -> int:
        return (self.changes[-1][0] if self.changes else 0) + 1

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        corpora, drive_id = query.get("corpora", "user"), query.get("driveId")
        if (corpora == "drive") != bool(drive_id):
            return self._error(400, "invalidParameter", "The driveId parameter must be specified if and only if "
                               "corpora is set to drive.", location="driveId")
        if drive_id and query.get("includeItemsFromAllDrives") != "true":
            return self._error(403, "teamDrivesParameterNotSupported", "includeItemsFromAllDrives must be set to "
                               "true when driveId is set.")
        match = re.fullmatch(r"'([^']+)' in parents and trashed ?= ?false", query.get("q", ""))
        if not match:
            return self._error(400, "invalid", "Invalid Value", location="q")
        if "pageToken" in query:
            if query["pageToken"] not in self._pages:
                return self._error(400, "invalid", "Invalid Value", location="pageToken")
            found = self._pages.pop(query["pageToken"])
        else:
            all_drives = query.get("includeItemsFromAllDrives") == "true" and query.get("supportsAllDrives") == "true"
            found = [i for i in self.items.values() if i.parent == match.group(1) and not i.trashed and not i.gone
                     and (not i.drive_id or all_drives) and (not drive_id or i.drive_id == drive_id)]
            found.sort(key=lambda i: i.name)
        size = min(int(query.get("pageSize", "100")), 1000)
        page, rest = found[:size], found[size:]
        data: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False,
                                "files": [i.resource(shared_drive_view=bool(i.drive_id)) for i in page]}
        if rest:
            token = secrets.token_urlsafe(12)
            self._pages[token] = rest
            data["nextPageToken"] = token
        return self._json(200, select(data, query.get("fields") or "kind,incompleteSearch,nextPageToken,"
                                                                    "files(kind,id,name,mimeType)"))

    def _changes(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        token = query.get("pageToken", "")
        if not token.isdigit() or int(token) > self._next_change():
            return self._error(400, "invalid", "Invalid Value", location="pageToken")
        drive_id = query.get("driveId")
        size = min(int(query.get("pageSize", "100")), 1000)
        start = int(token)
        entries: list[dict[str, Any]] = []
        last = start
        for number, file_id, when in self.changes:
            if number < start:
                continue
            item = self.items.get(file_id)
            if item is None or (item.drive_id or None) != (drive_id or None):
                last = number + 1
                continue
            if len(entries) == size:
                break
            change: dict[str, Any] = {"kind": "drive#change", "changeType": "file", "fileId": file_id,
                                      "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                                      "removed": item.gone}
            if not item.gone:
                change["file"] = item.resource(shared_drive_view=bool(item.drive_id))
            entries.append(change)
            last = number + 1
        data: dict[str, Any] = {"kind": "drive#changeList", "changes": entries}
        if last < self._next_change():
            data["nextPageToken"] = str(last)
        else:
            data["newStartPageToken"] = str(self._next_change())
        return self._json(200, select(data, query.get("fields", "")))

    def _export(self, item: Item, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if not item.mime_type.startswith("application/vnd.google-apps."):
            return self._error(403, "fileNotExportable", "Export only supports Docs Editors files.")
        if query.get("mimeType") != item.export_type:
            return self._error(400, "badRequest", "The requested conversion is not supported.", location="convertTo")
        if item.export_too_large or len(item.content) > EXPORT_LIMIT:
            return self._error(403, "exportSizeLimitExceeded", "This file is too large to be exported.")
        return 200, {"Content-Type": str(item.export_type)}, item.content


def slug_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name)[:12] or "f"


def _handler(drive: FakeDrive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, payload = drive.handle(method, parts.path, query, headers, body)
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self._serve("POST")

    return Handler


@contextmanager
def start_fake_drive() -> Iterator[FakeDrive]:
    drive = FakeDrive()
    with serving(_handler(drive)) as port:
        drive.url = f"http://127.0.0.1:{port}"
        yield drive
