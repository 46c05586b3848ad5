"""The ``google_drive`` kind: a folder of Google Drive (My Drive or a shared drive) and its subfolders, read with a
service account through the Drive API v3.

- **Credentials**: a service account key (JSON) from ``service_account_file`` or ``service_account_env``;
  ``subject`` impersonates a user through domain-wide delegation. google-auth signs the JWT and exchanges it at
  the key's ``token_uri`` for an access token (scope ``drive.readonly``), refreshed when it expires or is refused.
- **Listing**: ``files.list`` (``'<folder>' in parents and trashed=false``) folder by folder from ``folder_id``;
  a shared drive is read with ``corpora=drive`` / ``driveId`` (``drive_id``, or the folder's own ``driveId``).
- **Incremental**: ``changes.getStartPageToken`` is taken before the first listing; later syncs read
  ``changes.list`` from the saved token and apply it to the folder tree kept in the cursor (a file trashed,
  removed — deleted or access lost — or moved out of the tree is deleted; a folder moved in is listed). A re-sync
  with nothing new costs one ``changes.list`` call and downloads nothing.
- **Content**: Google Docs are exported as HTML (headings kept), Sheets as ``.xlsx`` (every sheet), Slides as
  ``.pptx``; PDFs and Office, Markdown, text and HTML files are downloaded (``alt=media``). Other types are skipped
  with the reason; so is a Google file Drive refuses to export (``exportSizeLimitExceeded``, over 10 MB).
- **Visibility**: a file with a permission of type ``anyone`` or ``domain`` may be shown in public channels; a file
  shared only with named users or groups is restricted. Drive lists inherited (folder, shared drive) permissions
  on the file itself. Permissions that cannot be read make the file restricted. The visibility travels with the
  document's reference (``DocumentRef.restricted``): a sharing change alone relabels the document at the next
  sync, without downloading or re-embedding it.
- **Rate limits**: ``429`` and ``403`` with reason ``rateLimitExceeded`` / ``userRateLimitExceeded`` are retried
  after ``Retry-After`` (exponential back-off without one), at most ``max_retries`` times.
"""

from __future__ import annotations

import html
import io
import json
import re
import time
import unicodedata
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import google.auth.exceptions
import google.auth.transport
import httpx
from google.oauth2 import service_account
from pydantic import Field, field_validator, model_validator

from bot.core.log import get_logger
from knowledge.connectors.base import (
    HttpSource,
    Changes,
    Connector,
    DocumentRef,
    FetchError,
    SourceError,
    SourcesConfigError,
    read_secret,
)
from knowledge.connectors.http import HttpClient, retry_after_seconds, without_query

log = get_logger(__name__)

SCOPE = "https://www.googleapis.com/auth/drive.readonly"
FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
#: Google's own formats -> (export MIME type, mirror suffix).
EXPORTS = {
    "application/vnd.google-apps.document": ("text/html", ".html"),
    "application/vnd.google-apps.spreadsheet":
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"),
    "application/vnd.google-apps.presentation":
        ("application/vnd.openxmlformats-officedocument.presentationml.presentation", ".pptx"),
}
#: Files downloaded as they are: MIME type -> suffix (a file's own extension is used when its type is generic).
DOWNLOADS = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/plain": ".txt",
    "text/html": ".html",
}
_EXTENSIONS = {".pdf", ".docx", ".pptx", ".xlsx", ".md", ".markdown", ".txt", ".html", ".htm"}
#: Reasons of a 403 that mean "slow down", not "forbidden".
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
FILE_FIELDS = ("id,name,mimeType,parents,trashed,modifiedTime,version,md5Checksum,size,webViewLink,driveId,"
               "permissionIds,permissions(id,type,role,domain,emailAddress)")
_UNEXPORTABLE = "google-drive-unexportable.json"
_DC = "http://purl.org/dc/elements/1.1/"


class GoogleDriveSource(HttpSource):
    kind: Literal["google_drive"]
    #: The folder synced with all its subfolders (the id in its URL: drive.google.com/drive/folders/<id>).
    folder_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    #: The shared drive holding it (optional: read from the folder when unset).
    drive_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    #: The service account key (JSON), from a file or an environment variable.
    service_account_file: Path | None = None
    service_account_env: str | None = None
    #: A user the service account impersonates (domain-wide delegation), e.g. docs-bot@example.com.
    subject: str | None = None
    #: The Drive API's base URL.
    api_url: str = "https://www.googleapis.com"
    page_size: int = Field(200, ge=1, le=1000)
    timeout_s: float = Field(60.0, gt=0)
    #: 429 and 403 rate-limit answers are retried after Retry-After this many times.
    max_retries: int = Field(5, ge=0)

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key(self) -> GoogleDriveSource:
        if (self.service_account_file is None) == (self.service_account_env is None):
            raise ValueError("give exactly one of 'service_account_file' and 'service_account_env' (the service "
                             "account's JSON key)")
        return self

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        raw = read_secret(self.name, "service_account", self.service_account_env, self.service_account_file,
                          environ)
        where = (f"service_account_env {self.service_account_env}" if self.service_account_env
                 else f"service_account_file {self.service_account_file}")
        try:
            info = json.loads(raw or "")
        except ValueError:
            raise SourcesConfigError(f"source '{self.name}': {where} does not hold a JSON key") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise SourcesConfigError(f"source '{self.name}': {where} is not a service account key "
                                     "(\"type\": \"service_account\")")
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[SCOPE], subject=self.subject)  # type: ignore[no-untyped-call]
        except (ValueError, KeyError, TypeError) as exc:
            missing = ", ".join(k for k in ("client_email", "private_key", "token_uri") if not info.get(k))
            detail = f"missing {missing}" if missing else "its private key cannot be read"
            raise SourcesConfigError(f"source '{self.name}': {where} is not a usable service account key "
                                     f"({detail})") from exc
        return GoogleDriveConnector(self, credentials, work_dir=work_dir, max_bytes=max_bytes)


def _default_sleep(seconds: float) -> None:
    time.sleep(seconds)


class _AuthRequest(google.auth.transport.Request):
    """google-auth's transport interface over our HttpClient (the token exchange with the key's token_uri)."""

    class _Response(google.auth.transport.Response):
        def __init__(self, response: httpx.Response) -> None:
            self._response = response

        @property
        def status(self) -> int:
            return self._response.status_code

        @property
        def headers(self) -> Mapping[str, str]:
            return self._response.headers

        @property
        def data(self) -> bytes:
            return self._response.content

    def __init__(self, http: HttpClient) -> None:
        self._http = http

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> google.auth.transport.Response:
        try:
            response = self._http.request(method, url, content=body, headers=dict(headers or {}))
        except FetchError as exc:
            raise google.auth.exceptions.TransportError(str(exc)) from exc  # type: ignore[no-untyped-call]
        return self._Response(response)


def _reason(response: httpx.Response) -> str:
    """The first ``error.errors[].reason`` of a Drive error body (else its status text)."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return ""
    if not isinstance(error, dict):
        return str(error)
    errors = error.get("errors") or [{}]
    return str(errors[0].get("reason") or error.get("status") or "")


def slug(text: str) -> str:
    """A readable path part: ``"Travel & Expenses"`` -> ``travel-expenses`` (accents folded; "" when nothing
    readable is left)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:80]


def _entry(file: Mapping[str, Any]) -> dict[str, Any]:
    """What the cursor keeps of one file."""
    parents = file.get("parents") or []
    return {"name": str(file.get("name") or ""), "parent": parents[0] if parents else None,
            "mime": str(file.get("mimeType") or ""), "marker": str(file.get("md5Checksum") or file.get("modifiedTime")
                                                                    or file.get("version") or ""),
            "drive_version": str(file.get("version") or ""), "link": file.get("webViewLink"),
            "size": int(file["size"]) if str(file.get("size") or "").isdigit() else None}


def _with_office_title(body: bytes, title: str) -> bytes:
    """An exported workbook or deck with the Drive file's name as its document title (``docProps/core.xml``
    ``dc:title``) when it has none: the readers take the title from there, else from the first sheet's name."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as package:
            core = package.read("docProps/core.xml").decode("utf-8")
            if re.search(r"<dc:title[^>]*>\s*[^<\s]", core) or "</cp:coreProperties>" not in core:
                return body
            core = re.sub(r"<dc:title\s*/>|<dc:title>\s*</dc:title>", "", core)
            core = core.replace("</cp:coreProperties>", f'<dc:title xmlns:dc="{_DC}">{html.escape(title)}</dc:title>'
                                "</cp:coreProperties>")
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
                for info in package.infolist():
                    data = core.encode("utf-8") if info.filename == "docProps/core.xml" else package.read(info)
                    copy.writestr(info, data)
        return out.getvalue()
    except (KeyError, zipfile.BadZipFile, UnicodeDecodeError, OSError):
        return body  # no core properties (or not a package): the reader titles it its own way


def restricted_by(permissions: Iterable[Mapping[str, Any]]) -> bool:
    """True unless one permission opens the file to anyone (with the link, or on the web) or to a whole domain."""
    return not any(str(p.get("type")) in ("anyone", "domain") for p in permissions)


class GoogleDriveConnector:
    def __init__(self, source: GoogleDriveSource, credentials: service_account.Credentials, *, work_dir: Path,
                 max_bytes: int = 5_000_000, sleep: Callable[[float], None] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.work_dir = work_dir
        self._credentials = credentials
        self._sleep = sleep or _default_sleep
        self._http = HttpClient.for_source(source, base_url=source.api_url, sleep=self._sleep, transport=transport,
                                           headers={"User-Agent": "DeskmateBot/1.0"})
        self._auth_request = _AuthRequest(self._http)
        self._drive_id = source.drive_id
        #: The synced folder's id as Drive names it in ``parents`` (folder_id may be the alias "root").
        self._root = source.folder_id
        self._account = str(getattr(credentials, "service_account_email", "") or "the service account")
        #: mirror path -> (file id, cursor entry), from the last listing: what fetch downloads or exports.
        self._listed: dict[str, tuple[str, dict[str, Any]]] = {}
        #: Files whose permissions.list was asked during this sync.
        self._permissions_read: set[str] = set()

    @property
    def local_root(self) -> Path | None:
        return None

    # --- HTTP -------------------------------------------------------------------------------------------------
    def _token(self, *, force: bool = False) -> str:
        if force or not self._credentials.valid:
            try:
                self._credentials.refresh(self._auth_request)  # type: ignore[no-untyped-call]
            except google.auth.exceptions.RefreshError as exc:
                detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc.__class__.__name__
                raise SourceError(
                    f"Google refused the service account key ({detail[:200]}): check that the key of "
                    f"{self._account} is current (not deleted or disabled)"
                    + (f" and that domain-wide delegation for {self.source.subject} allows the scope {SCOPE}"
                       if self.source.subject else "")) from None
            except google.auth.exceptions.TransportError as exc:
                raise SourceError(f"Google's token endpoint cannot be reached ({exc})") from None
        return str(self._credentials.token)

    def _call(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """GET a Drive API path with the access token; 401 refreshes the token once, 429 (HttpClient) and 403
        rate-limit reasons are retried after Retry-After. Returns the last response; raises FetchError on a
        transport failure or a Retry-After longer than allowed."""
        refreshed = False
        attempt = 0
        while True:
            headers = {"Authorization": f"Bearer {self._token()}"}
            response = self._http.get(path, params=dict(params or {}), headers=headers)
            if response.status_code == 401 and not refreshed:
                self._token(force=True)
                refreshed = True
                continue
            if (response.status_code == 403 and attempt < self.source.max_retries
                    and _reason(response) in RATE_LIMIT_REASONS):
                delay = retry_after_seconds(response.headers.get("Retry-After"), default=2.0 ** attempt)
                if delay > self.source.max_retry_after_s:
                    raise FetchError(f"HTTP 403 {_reason(response)}: Retry-After {delay:.0f} s is longer than "
                                     f"max_retry_after_s ({self.source.max_retry_after_s:g})")
                log.info("source.google_drive.rate_limited", source=self.source.name, reason=_reason(response),
                         seconds=round(delay, 2), attempt=attempt + 1)
                self._sleep(delay)
                attempt += 1
                continue
            return response

    def _json(self, path: str, params: Mapping[str, Any], what: str) -> dict[str, Any]:
        """A listing call whose failure fails the whole source."""
        try:
            response = self._call(path, params)
        except FetchError as exc:
            raise SourceError(f"Google Drive {what}: {exc}") from None
        self._check(response, what)
        data = response.json()
        return data if isinstance(data, dict) else {}

    def _check(self, response: httpx.Response, what: str) -> None:
        """Raises SourceError, saying what to check, unless ``response`` is a 200."""
        if response.status_code == 200:
            return
        reason = _reason(response)
        who = self.source.subject or self._account
        if response.status_code == 401:
            raise SourceError(f"Google Drive rejected the access token of {self._account} (HTTP 401 {reason}) "
                              f"on {what}: check the service account key")
        if reason in RATE_LIMIT_REASONS or response.status_code == 429:
            raise SourceError(f"Google Drive {what}: still rate-limited after {self.source.max_retries} retries "
                              f"(HTTP {response.status_code} {reason}); the next sync tries again")
        if response.status_code == 403:
            raise SourceError(f"Google Drive refused {what} (HTTP 403 {reason}): check that the Drive API is "
                              f"enabled in the service account's project and that folder {self.source.folder_id} "
                              f"is shared with {who}")
        if response.status_code == 404:
            raise SourceError(f"Google Drive {what}: not found (HTTP 404 {reason}): check folder_id "
                              f"{self.source.folder_id}" + (f" and drive_id {self._drive_id}" if self._drive_id else "")
                              + f", and that it is shared with {who}")
        raise SourceError(f"Google Drive {what} answered HTTP {response.status_code} {reason}".rstrip())

    def _drive_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
        if self._drive_id:
            params.update(corpora="drive", driveId=self._drive_id)
        return params

    # --- listing ----------------------------------------------------------------------------------------------
    def _check_root(self) -> None:
        root = self._json(f"/drive/v3/files/{self.source.folder_id}",
                          {"fields": "id,name,mimeType,trashed,driveId", "supportsAllDrives": "true"},
                          f"folder {self.source.folder_id}")
        if root.get("mimeType") != FOLDER:
            raise SourceError(f"folder_id {self.source.folder_id} is not a folder ({root.get('mimeType')})")
        if root.get("trashed"):
            raise SourceError(f"folder {self.source.folder_id} is in the trash")
        drive = root.get("driveId")
        if self.source.drive_id and drive != self.source.drive_id:
            raise SourceError(f"folder {self.source.folder_id} is not in shared drive {self.source.drive_id} "
                              f"(it is in {drive or 'a My Drive'})")
        self._drive_id = drive or None
        self._root = str(root.get("id") or self.source.folder_id)  # "root" (My Drive) -> its real id

    def _children(self, folder_id: str) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = []
        params: dict[str, Any] = {"q": f"'{folder_id}' in parents and trashed=false", "pageSize": self.source.page_size,
                                  "fields": f"nextPageToken,incompleteSearch,files({FILE_FIELDS})",
                                  **self._drive_params()}
        while True:
            data = self._json("/drive/v3/files", params, f"listing folder {folder_id}")
            files.extend(f for f in data.get("files", []) if isinstance(f, dict))
            token = data.get("nextPageToken")
            if not token:
                return files
            params["pageToken"] = token

    def _list_tree(self, top: str, folders: dict[str, dict[str, Any]], files: dict[str, dict[str, Any]],
                   old: Mapping[str, dict[str, Any]]) -> None:
        """Add the folders and files below ``top`` (breadth first, one files.list per folder)."""
        queue, seen = deque([top]), {top, self._root}
        while queue:
            for item in self._children(queue.popleft()):
                if item.get("mimeType") == FOLDER:
                    folders[item["id"]] = {"name": item.get("name", ""), "parent": (item.get("parents") or [None])[0]}
                    if item["id"] not in seen:
                        seen.add(item["id"])
                        queue.append(item["id"])
                else:
                    files[item["id"]] = self._file_entry(item, old.get(item["id"]))

    def _file_entry(self, file: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
        entry = _entry(file)
        permissions = file.get("permissions")
        if isinstance(permissions, list):
            entry["restricted"] = restricted_by(permissions)
        elif (old is not None and old.get("drive_version") == entry["drive_version"] and "restricted" in old
              and not old.get("permissions_pending")):
            entry["restricted"] = old["restricted"]  # unchanged since its permissions were read
        elif entry["mime"] in EXPORTS or self._suffix(entry) is not None:
            self._set_permissions(str(file["id"]), entry)
        else:
            entry["restricted"] = True  # not a document: its permissions do not matter
        return entry

    def _set_permissions(self, file_id: str, entry: dict[str, Any]) -> None:
        """``entry["restricted"]`` from permissions.list (files in shared drives, whose ``permissions`` files.list
        does not fill; My Drive files the account may not share). Permissions Drive refuses to show (403, 404)
        make the file restricted; a failure that may pass (5xx, still rate-limited, unreachable) makes it
        restricted *for now* (``permissions_pending``: asked again at every sync until answered)."""
        params: dict[str, Any] = {"supportsAllDrives": "true", "pageSize": 100,
                                  "fields": "nextPageToken,permissions(id,type,role,domain,emailAddress)"}
        permissions: list[dict[str, Any]] = []
        self._permissions_read.add(file_id)
        entry["restricted"] = True
        entry.pop("permissions_pending", None)
        while True:
            try:
                response = self._call(f"/drive/v3/files/{file_id}/permissions", params)
            except FetchError:
                entry["permissions_pending"] = True
                return
            if response.status_code != 200:
                log.info("source.google_drive.permissions_unreadable", source=self.source.name,
                         status=response.status_code, reason=_reason(response))
                if response.status_code not in (403, 404) or _reason(response) in RATE_LIMIT_REASONS:
                    entry["permissions_pending"] = True
                return
            data = response.json()
            permissions.extend(data.get("permissions", []))
            if not data.get("nextPageToken"):
                entry["restricted"] = restricted_by(permissions)
                return
            params["pageToken"] = data["nextPageToken"]

    def _start_token(self) -> str:
        params: dict[str, Any] = {"supportsAllDrives": "true"}
        if self._drive_id:
            params["driveId"] = self._drive_id
        token = self._json("/drive/v3/changes/startPageToken", params, "changes.getStartPageToken").get(
            "startPageToken")
        if not token:
            raise SourceError("Google Drive answered no startPageToken")
        return str(token)

    def _changes_since(self, token: str) -> tuple[list[dict[str, Any]], str] | None:
        """Every change since ``token`` and the next start token; None when Drive no longer knows the token."""
        changes: list[dict[str, Any]] = []
        params: dict[str, Any] = {"pageToken": token, "pageSize": self.source.page_size,
                                  "includeRemoved": "true", "spaces": "drive",
                                  "fields": f"nextPageToken,newStartPageToken,changes(fileId,removed,time,"
                                            f"file({FILE_FIELDS}))",
                                  "supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
        if self._drive_id:
            params["driveId"] = self._drive_id
        while True:
            try:
                response = self._call("/drive/v3/changes", params)
            except FetchError as exc:
                raise SourceError(f"Google Drive changes.list: {exc}") from None
            if response.status_code in (400, 404) and not changes:
                log.warning("source.google_drive.token_unknown", source=self.source.name,
                            status=response.status_code, reason=_reason(response))
                return None
            self._check(response, "changes.list")
            data = response.json()
            changes.extend(c for c in data.get("changes", []) if isinstance(c, dict))
            if data.get("newStartPageToken"):
                return changes, str(data["newStartPageToken"])
            if not data.get("nextPageToken"):
                raise SourceError("Google Drive changes.list answered neither nextPageToken nor newStartPageToken")
            params["pageToken"] = data["nextPageToken"]

    def _apply(self, changes: list[dict[str, Any]], folders: dict[str, dict[str, Any]],
               files: dict[str, dict[str, Any]]) -> None:
        """Apply Drive's changes to the tree kept in the cursor (in place)."""
        root = self._root
        latest: dict[str, dict[str, Any]] = {}
        for change in changes:
            if change.get("fileId"):
                latest[str(change["fileId"])] = change
        before = set(folders)
        alive: dict[str, dict[str, Any]] = {}
        for file_id, change in latest.items():
            file = change.get("file")
            if change.get("removed") or not isinstance(file, dict) or file.get("trashed"):
                if file_id == root:
                    raise SourceError(f"folder {root} was trashed, deleted or unshared: nothing was changed; check "
                                      f"the folder in Google Drive")
                folders.pop(file_id, None)
                files.pop(file_id, None)
            else:
                alive[file_id] = file
        for file_id, file in alive.items():
            if file.get("mimeType") == FOLDER and file_id != root:
                folders[file_id] = {"name": file.get("name", ""), "parent": (file.get("parents") or [None])[0]}
        reachable = self._reachable(folders)
        for file_id in list(folders):
            if file_id not in reachable:
                del folders[file_id]
        old_files = dict(files)
        for file_id in sorted(reachable - before - {root}):
            parent = folders[file_id]["parent"]
            if parent in before or parent == root:  # the top of a subtree that moved in: list what it holds
                self._list_tree(file_id, folders, files, old_files)
        for file_id, file in alive.items():
            if file.get("mimeType") == FOLDER:
                continue
            parents = file.get("parents") or []
            if parents and (parents[0] == root or parents[0] in folders):
                files[file_id] = self._file_entry(file, old_files.get(file_id))
            else:
                files.pop(file_id, None)
        for file_id in [f for f, e in files.items() if e.get("parent") != root and e.get("parent") not in folders]:
            del files[file_id]

    def _reachable(self, folders: Mapping[str, Mapping[str, Any]]) -> set[str]:
        root = self._root
        reachable = {root}
        for start in folders:
            chain: list[str] = []
            node: str | None = start
            while node is not None and node not in reachable and node in folders and node not in chain:
                chain.append(node)
                node = folders[node].get("parent")
            if node in reachable:
                reachable.update(chain)
        return reachable

    # --- paths, refs -------------------------------------------------------------------------------------------
    @staticmethod
    def _suffix(entry: Mapping[str, Any]) -> str | None:
        mime = str(entry.get("mime") or "")
        if mime in EXPORTS:
            return EXPORTS[mime][1]
        ext = Path(str(entry.get("name") or "")).suffix.lower()
        if mime in DOWNLOADS:
            return ".md" if ext in (".md", ".markdown") else DOWNLOADS[mime]
        if ext in _EXTENSIONS and mime in ("application/octet-stream", "text/x-markdown", ""):
            return ".html" if ext == ".htm" else ".md" if ext == ".markdown" else ext
        return None

    def _folder_path(self, folder_id: str | None, folders: Mapping[str, Mapping[str, Any]]) -> list[str]:
        parts: list[str] = []
        while folder_id and folder_id != self._root and folder_id in folders and len(parts) < 50:
            parts.append(slug(str(folders[folder_id]["name"])) or folder_id)
            folder_id = folders[folder_id].get("parent")
        return list(reversed(parts))

    def _paths(self, folders: Mapping[str, Mapping[str, Any]],
               files: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """file id -> mirror path: its folders' and its own names (``it/vpn-guide.html``); the file id is added
        only when two files of a folder would have the same path."""
        stems: dict[str, str] = {}
        extensions: dict[str, str] = {}
        for file_id, entry in files.items():
            name = str(entry["name"])
            ext = Path(name).suffix.lower()
            if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) and entry["mime"] not in EXPORTS:
                name, extensions[file_id] = name[: -len(ext)], ext
            stems[file_id] = "/".join([*self._folder_path(entry.get("parent"), folders), slug(name) or file_id])
        taken: dict[str, int] = {}
        for stem in stems.values():
            taken[stem] = taken.get(stem, 0) + 1
        paths = {}
        for file_id, stem in stems.items():
            if taken[stem] > 1:
                stem = f"{stem}-{slug(file_id[-8:]) or 'x'}"
            paths[file_id] = stem + (self._suffix(files[file_id]) or extensions.get(file_id, ""))
        return paths

    def _unexportable(self) -> dict[str, str]:
        try:
            data = json.loads((self.work_dir / _UNEXPORTABLE).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _remember_unexportable(self, file_id: str, marker: str) -> None:
        known = self._unexportable()
        known[file_id] = marker
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / _UNEXPORTABLE).write_text(json.dumps(known, sort_keys=True))

    def changes(self, cursor: str | None) -> Changes:
        state: dict[str, Any] = json.loads(cursor) if cursor else {}
        if state.get("folder_id") != self.source.folder_id or (
                self.source.drive_id and state.get("drive_id") != self.source.drive_id):
            state = {}  # another folder or drive than the cursor's: list it all again
        folders: dict[str, dict[str, Any]] = dict(state.get("folders") or {})
        files: dict[str, dict[str, Any]] = dict(state.get("files") or {})
        self._drive_id = state.get("drive_id") or self.source.drive_id
        self._root = str(state.get("root_id") or self.source.folder_id)
        listed = None
        if state.get("token"):
            listed = self._changes_since(str(state["token"]))
        if listed is None:  # first sync (or a token Drive forgot): the whole tree, after taking a start token
            self._check_root()
            token = self._start_token()
            old_files = files
            folders, files = {}, {}
            self._list_tree(self._root, folders, files, old_files)
        else:
            changes, token = listed
            self._apply(changes, folders, files)
        for file_id, entry in files.items():
            if entry.get("permissions_pending") and file_id not in self._permissions_read:
                self._set_permissions(file_id, entry)  # unanswered last time: asked again
        paths = self._paths(folders, files)
        unexportable = self._unexportable()
        refs: list[DocumentRef] = []
        skipped: dict[str, str] = {}
        for file_id, entry in sorted(files.items(), key=lambda item: paths[item[0]]):
            path, mime = paths[file_id], entry["mime"]
            if mime == FOLDER:
                continue
            if self._suffix(entry) is None:
                what = ("a shortcut (not followed)" if mime == SHORTCUT else
                        f"unsupported Google file type '{mime}'" if mime.startswith("application/vnd.google-apps.")
                        else f"unsupported file type '{mime or Path(path).suffix}'")
                skipped[path] = what
                continue
            if entry.get("size") is not None and mime not in EXPORTS and entry["size"] > self.max_bytes:
                skipped[path] = f"too large ({entry['size']:,} bytes > limit {self.max_bytes:,})"
                continue
            if unexportable.get(file_id) == entry["marker"]:
                skipped[path] = "Google Drive cannot export it (exportSizeLimitExceeded: larger than 10 MB exported)"
                continue
            restricted = bool(entry.get("restricted", True))
            self._listed[path] = (file_id, entry)
            refs.append(DocumentRef(path, f"{entry['marker']}@{file_id}", entry.get("link"), restricted))
        new_state = {"folder_id": self.source.folder_id, "root_id": self._root, "drive_id": self._drive_id,
                     "token": token, "folders": folders, "files": files}
        log.info("source.google_drive.listed", source=self.source.name, folders=len(folders), files=len(files),
                 documents=len(refs), skipped=len(skipped), incremental=listed is not None)
        return Changes(changed=refs, deleted=[], cursor=json.dumps(new_state, sort_keys=True), complete=True,
                       skipped=skipped)

    # --- content ----------------------------------------------------------------------------------------------
    def fetch(self, ref: DocumentRef) -> bytes:
        listed = self._listed.get(ref.path)
        if listed is None:
            raise FetchError("not in the last listing of the folder")
        file_id, entry = listed
        export = EXPORTS.get(entry["mime"])
        if export is not None:
            path, params = f"/drive/v3/files/{file_id}/export", {"mimeType": export[0]}
        else:
            path, params = f"/drive/v3/files/{file_id}", {"alt": "media", "supportsAllDrives": "true"}
        response = self._call(path, params)
        if response.status_code != 200:
            reason = _reason(response)
            if reason == "exportSizeLimitExceeded":
                self._remember_unexportable(file_id, entry["marker"])
                raise FetchError("Google Drive cannot export it: larger than 10 MB exported (exportSizeLimitExceeded);"
                                 " it is skipped from the next sync on, until it changes")
            raise FetchError(f"HTTP {response.status_code} {reason} from {without_query(str(response.url))}")
        body = response.content
        suffix = Path(ref.path).suffix
        if export is not None and suffix != ".html":
            body = _with_office_title(body, str(entry["name"]))
        if suffix == ".html":
            body = self._titled(body, str(entry["name"]) if export is not None else "")
        return body

    @staticmethod
    def _titled(body: bytes, title: str) -> bytes:
        """A Google Doc's HTML export has no ``<title>``: the document's name becomes it (the title of the
        document in answers and citations)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # an uploaded page in another encoding: left as it is
            return body
        head = f"<title>{html.escape(title)}</title>" if title and "<title" not in text[:5000].lower() else ""
        if not head:
            return body
        match = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
        if match:
            text = text[: match.end()] + head + text[match.end():]
        else:
            text = f"<head>{head}</head>" + text
        return text.encode("utf-8")

    def close(self) -> None:
        self._http.close()
