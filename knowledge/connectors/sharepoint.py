"""The ``sharepoint`` kind: a SharePoint site (its document libraries and its site pages) or a person's OneDrive,
through Microsoft Graph with an app registration (client credentials).

- **Sign-in**: MSAL's :class:`msal.ConfidentialClientApplication` with ``client_id`` and the client secret
  (``client_secret_env`` / ``client_secret_file``) against ``<authority_url>/<tenant_id>``; the token's scope is
  ``<graph origin>/.default`` (the application permissions granted to the app). Instance discovery is off: the
  authority is the one configured (MSAL still fetches its OpenID configuration).
- **Targets**: ``site: acme.sharepoint.com:/sites/HR`` (``GET /sites/{hostname}:/{path}``) → its document
  libraries (``GET /sites/{id}/drives``, optionally only ``libraries: [...]`` by name) and its site pages
  (``GET /sites/{id}/pages/microsoft.graph.sitePage``); or ``user: someone@acme.com`` → that user's OneDrive
  (``GET /users/{upn}/drive``).
- **Incremental**: per drive, ``GET /drives/{id}/root/delta`` followed through ``@odata.nextLink`` pages; the
  final ``@odata.deltaLink`` is kept in the cursor and asked next time, so an unchanged drive costs one request.
  Items are tracked by id (delta gives no paths): the cursor keeps each drive's tree (names, parents, versions),
  so a renamed folder moves its files. Items with the ``deleted`` facet are removed. ``410 Gone`` (the delta
  token expired) restarts the enumeration from the ``Location`` it gives and replaces the drive's tree (a full
  listing: anything not listed again is deleted). Site pages have no delta: they are listed each time (metadata
  only) and a page's canvas is read only when its ``eTag`` changed.
- **Versions**: a file's ``cTag`` (content tag), else its ``eTag`` (OneDrive for Business omits ``cTag`` from
  delta); a page's ``eTag``. **Citations**: the item's or page's ``webUrl``.
- **Download**: ``GET /drives/{id}/items/{id}/content`` answers ``302`` to a short-lived pre-authenticated URL,
  which is followed.
- **Pages**: the ``textWebPart`` web parts' ``innerHtml`` of the page's canvas (``$expand=canvasLayout``:
  horizontal sections' columns, then the vertical section), in order, under an ``<h1>`` with the page title, as
  an ``.html`` document. Other web parts (images, lists, embeds) are not read. A page never published (version
  0.x) is skipped.
- **Permissions → visibility** (see docs/connectors/sharepoint.md): a OneDrive file is restricted unless it
  is shared with an organization-wide or anyone link (``shared.scope`` ``organization`` / ``anonymous``); a
  site's file that has been shared (``shared`` facet) is checked with ``GET /drives/{id}/items/{id}/permissions``
  and is restricted when none of its permissions reaches beyond named people: no organization/anyone link, no
  grant to the site's own groups (it no longer inherits the site's permissions), no grant to Everyone / Everyone
  except external users. Group membership is not expanded; a site's own permissions are not exposed by Graph
  (use the source's ``visibility: restricted`` for a site limited to some people).
- **Rate limits**: Graph's ``429`` / ``503`` are retried after their ``Retry-After`` (:class:`HttpClient`).
"""

from __future__ import annotations

import functools
import html
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

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
    SourcesConfigError,
    read_secret,
)
from knowledge.connectors.http import RETRIED_STATUSES, HttpClient
from knowledge.sources import SUPPORTED_SUFFIXES

log = get_logger(__name__)

#: The folder of the mirror that holds a site's pages (as in SharePoint's own URLs: /SitePages/Home.aspx).
PAGES_FOLDER = "SitePages"
_CURSOR_VERSION = 1
#: Graph's traffic decoration (``NONISV|<company>|<app>/<version>``), which Microsoft asks of throttled clients.
USER_AGENT = "NONISV|Deskmate|Deskmate/1.0"
#: Principals that stand for everyone in the organization (SharePoint login names of the special claims).
_EVERYONE_LOGINS = ("spo-grid-all-users", "c:0(.s|true", "c:0-.f|rolemanager|spo-grid-all-users")
_EVERYONE_NAMES = {"everyone", "everyone except external users"}


def _sleep(seconds: float) -> None:
    """How the connector waits out a ``Retry-After`` (tests replace it to record the wait)."""
    time.sleep(seconds)


class SharePointSource(HttpSource):
    kind: Literal["sharepoint"]
    #: The Microsoft Entra tenant (its id or a verified domain such as acme.onmicrosoft.com).
    tenant_id: str = Field(min_length=1)
    #: The app registration's Application (client) id.
    client_id: str = Field(min_length=1)
    #: The app registration's client secret value (environment variable or file).
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    #: Exactly one of: a SharePoint site (``acme.sharepoint.com:/sites/HR``, or its https URL), or the user
    #: whose OneDrive is synced (user principal name or object id).
    site: str | None = None
    user: str | None = None
    #: Only these document libraries of the site (by name, e.g. ``Documents``); default: every library.
    libraries: list[str] | None = None
    #: Also sync the site's pages (SitePages).
    pages: bool = True
    #: Read the permissions of shared files of a site to find those restricted to named people.
    check_permissions: bool = True
    authority_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    #: CA certificates (PEM) to trust for the authority and Graph, e.g. behind a TLS-inspecting proxy.
    ca_file: Path | None = None
    max_retries: int = Field(4, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0)

    @field_validator("authority_url", "graph_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parsed = urlsplit(value)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError("must be an https:// URL")
        if parsed.password or parsed.username:
            raise ValueError("the URL holds credentials: put the secret in client_secret_env or client_secret_file")
        return value.rstrip("/")

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.startswith("https://"):  # https://acme.sharepoint.com/sites/HR -> acme.sharepoint.com:/sites/HR
            parsed = urlsplit(value)
            path = unquote(parsed.path).rstrip("/")
            value = f"{parsed.hostname}:{path}" if path else str(parsed.hostname)
        host, _, path = value.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", host) or (path and not path.startswith("/")):
            raise ValueError("expected a site as hostname:/path (acme.sharepoint.com:/sites/HR) or its https URL")
        return f"{host}:{path.rstrip('/')}" if path.strip("/") else host

    @model_validator(mode="after")
    def _target(self) -> SharePointSource:
        if (self.site is None) == (self.user is None):
            raise ValueError("give exactly one of 'site' (a SharePoint site) and 'user' (a OneDrive)")
        if self.user is not None and self.libraries is not None:
            raise ValueError("'libraries' applies to a site, not to a OneDrive")
        if self.client_secret_env is None and self.client_secret_file is None:
            raise ValueError("give 'client_secret_env' or 'client_secret_file' (the app registration's secret)")
        return self

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        secret = read_secret(self.name, "client_secret", self.client_secret_env, self.client_secret_file, environ)
        if secret is None:  # unreachable: the validator requires one of the keys
            raise SourcesConfigError(f"source '{self.name}': no client secret configured")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise SourcesConfigError(f"source '{self.name}': ca_file {self.ca_file} cannot be read")
        return SharePointConnector(self, client_secret=secret, max_bytes=max_bytes)


@dataclass(frozen=True)
class _Target:
    """Where a listed document is read from."""

    drive_id: str = ""
    item_id: str = ""
    page_id: str = ""
    title: str = ""


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if code else f"HTTP {status}")
        self.status, self.code, self.message = status, code, message


class SharePointConnector:
    def __init__(self, source: SharePointSource, *, client_secret: str, max_bytes: int = 5_000_000,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self._secret = client_secret
        self._app: Any = None
        verify: ssl.SSLContext | bool = True
        if source.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(source.ca_file))
        self._http = HttpClient.for_source(source, headers={"User-Agent": USER_AGENT}, follow_redirects=True,
                                sleep=sleep or (lambda seconds: _sleep(seconds)),
                                transport=httpx.HTTPTransport(verify=verify))
        self._targets: dict[str, _Target] = {}
        self._site_id = ""
        graph = urlsplit(source.graph_url)
        self._scope = f"{graph.scheme}://{graph.netloc}/.default"

    @property
    def local_root(self) -> Path | None:
        return None

    # --- sign-in ----------------------------------------------------------------------------------------------
    def _what(self) -> str:
        return f"source '{self.source.name}'"

    def _token(self) -> str:
        import msal  # type: ignore[import-untyped]  # noqa: PLC0415 - loaded only by the sources that need it

        source = self.source
        authority = f"{source.authority_url}/{source.tenant_id}"
        try:
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    source.client_id, client_credential=self._secret, authority=authority,
                    instance_discovery=False, http_client=self._msal_http(), timeout=source.timeout_s)
            result = self._app.acquire_token_for_client(scopes=[self._scope])
        except ValueError as exc:  # MSAL's tenant discovery refused (unknown tenant, not an Entra authority)
            raise SourceError(f"{self._what()}: cannot sign in at {authority} (tenant not found, or authority_url "
                              f"is not a Microsoft Entra ID authority); check tenant_id and authority_url") from exc
        except OSError as exc:  # requests' errors (MSAL's HTTP client) are OSErrors
            raise SourceError(f"{self._what()}: cannot reach the sign-in service {source.authority_url} "
                              f"({exc.__class__.__name__})") from exc
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error = str(result.get("error", "no token")) if isinstance(result, dict) else "no token"
            codes = result.get("error_codes") if isinstance(result, dict) else None
            code = f" AADSTS{codes[0]}" if isinstance(codes, list) and codes else ""
            hint = {"invalid_client": "check the client secret (client_secret_env / client_secret_file) and that "
                                      "it has not expired",
                    "unauthorized_client": "check client_id (the app registration's Application id) and tenant_id"
                    }.get(error, "check tenant_id, client_id and the client secret")
            raise SourceError(f"{self._what()}: sign-in refused for app {source.client_id} ({error}{code}); {hint}")
        return str(token)

    def _msal_http(self) -> Any:
        """MSAL's HTTP client: None (MSAL's own) unless ``ca_file`` is set, then a requests session that trusts
        it. (A session's ``verify`` loses to REQUESTS_CA_BUNDLE in requests, so it is passed with each call.)"""
        if self.source.ca_file is None:
            return None
        import requests  # noqa: PLC0415 - MSAL's HTTP library

        session = requests.Session()
        session.request = functools.partial(session.request, verify=str(self.source.ca_file),  # type: ignore[method-assign]
                                            timeout=self.source.timeout_s)
        return session

    # --- Graph ------------------------------------------------------------------------------------------------
    def _request(self, url: str, **kwargs: Any) -> httpx.Response:
        if not url.startswith(("http://", "https://")):
            url = self.source.graph_url + url
        elif urlsplit(url).netloc != urlsplit(self.source.graph_url).netloc:
            raise FetchError("a next or delta link outside graph_url: not followed with the app's token")
        headers = {"Authorization": f"Bearer {self._token()}", **kwargs.pop("headers", {})}
        response = self._http.get(url, headers=headers, **kwargs)
        if response.status_code in RETRIED_STATUSES:
            raise FetchError(f"HTTP {response.status_code}: still throttled after {self.source.max_retries} "
                             f"retries")
        return response

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        """A JSON object body; raises FetchError for anything else (a proxy's HTML page, a truncated body)."""
        try:
            data = response.json()
        except ValueError as exc:
            raise FetchError(f"HTTP {response.status_code}: not a JSON answer") from exc
        if not isinstance(data, dict):
            raise FetchError(f"HTTP {response.status_code}: not a JSON object")
        return data

    @staticmethod
    def _error(response: httpx.Response) -> GraphError:
        code, message = "", ""
        try:
            data = response.json()
        except ValueError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code, message = str(error.get("code", "")), str(error.get("message", ""))
        return GraphError(response.status_code, code, message[:200])

    def _json(self, url: str, what: str) -> dict[str, Any]:
        """One Graph call whose failure fails the whole source (a listing)."""
        try:
            response = self._request(url)
            if response.status_code == 200:
                return self._body(response)
        except FetchError as exc:
            raise SourceError(f"{self._what()}: {what}: {exc}") from exc
        raise self._source_error(response, what)

    def _source_error(self, response: httpx.Response, what: str) -> SourceError:
        error = self._error(response)
        if error.status in (401, 403):
            permission = "Files.Read.All" if self.source.user else "Sites.Read.All (or Sites.Selected granted on it)"
            return SourceError(f"{self._what()}: Microsoft Graph refused {what} ({error.status} {error.code}); "
                               f"check that the app has the application permission {permission} with admin consent")
        if error.status == 404:
            return SourceError(f"{self._what()}: {what} not found ({error.code}); check "
                               f"{'user' if self.source.user else 'site'}: {self.source.user or self.source.site}")
        return SourceError(f"{self._what()}: {what} failed (HTTP {error.status} {error.code})")

    def _pages_of(self, url: str, what: str) -> Iterator[dict[str, Any]]:
        while url:
            data = self._json(url, what)
            yield from (v for v in data.get("value", []) if isinstance(v, dict))
            url = str(data.get("@odata.nextLink") or "")

    # --- listing ----------------------------------------------------------------------------------------------
    def _drives(self) -> list[tuple[dict[str, Any], str]]:
        """The drives to sync, each with the folder of the mirror that holds it ("" for a OneDrive)."""
        if self.source.user:
            drive = self._json(f"/users/{quote(self.source.user, safe='@')}/drive", f"the OneDrive of {self.source.user}")
            return [(drive, "")]
        site = str(self.source.site)
        host, _, path = site.partition(":")
        url = f"/sites/{host}:{quote(path)}" if path else f"/sites/{host}"
        self._site_id = str(self._json(url, f"site {site}")["id"])
        drives = list(self._pages_of(f"/sites/{self._site_id}/drives", f"the document libraries of {site}"))
        if self.source.libraries is not None:
            wanted = {name.casefold() for name in self.source.libraries}
            missing = wanted - {str(d.get("name", "")).casefold() for d in drives}
            if missing:
                raise SourceError(f"{self._what()}: no library named {', '.join(sorted(missing))} on site {site} "
                                  f"(it has: {', '.join(sorted(str(d.get('name')) for d in drives))})")
            drives = [d for d in drives if str(d.get("name", "")).casefold() in wanted]
        out, used = [], {PAGES_FOLDER.casefold()}
        for drive in drives:
            folder = _safe_name(str(drive.get("name") or "library"))
            if folder.casefold() in used:
                folder = f"{folder}-{str(drive['id'])[-8:]}"
            used.add(folder.casefold())
            out.append((drive, folder))
        return out

    def _delta(self, drive_id: str, previous: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        """The drive's tree brought up to date through delta: ({"delta", "root", "items"}, errors)."""
        previous = previous or {}
        delta_link, root = str(previous.get("delta", "")), str(previous.get("root", ""))
        items: dict[str, dict[str, Any]] = dict(previous.get("items") or {})
        url = delta_link or f"/drives/{drive_id}/root/delta"
        what = f"the changes of drive {drive_id}"
        changes: dict[str, dict[str, Any]] = {}
        resynced = False
        while True:
            try:
                response = self._request(url)
                data = self._body(response) if response.status_code == 200 else {}
            except FetchError as exc:
                raise SourceError(f"{self._what()}: {what}: {exc}") from exc
            if response.status_code == 410 and not resynced:  # the token expired: enumerate afresh
                log.info("source.sharepoint.resync", source=self.source.name, code=self._error(response).code)
                url = response.headers.get("Location") or f"/drives/{drive_id}/root/delta"
                root, items = "", {}
                changes.clear()
                resynced = True
                continue
            if response.status_code != 200:
                raise self._source_error(response, what)
            for item in data.get("value", []):
                if isinstance(item, dict) and item.get("id"):
                    changes[str(item["id"])] = item  # the last occurrence wins
            if data.get("@odata.nextLink"):
                url = str(data["@odata.nextLink"])
                continue
            delta_link = str(data.get("@odata.deltaLink") or "")
            break
        errors: list[str] = []
        for item_id, item in changes.items():
            if "deleted" in item:
                items.pop(item_id, None)
                continue
            if "root" in item:
                root = item_id
                continue
            entry: dict[str, Any] = {"n": str(item.get("name", "")),
                                     "p": str((item.get("parentReference") or {}).get("id", ""))}
            if "folder" in item:
                entry["d"] = 1
            elif "file" in item:
                entry.update(v=str(item.get("cTag") or item.get("eTag") or item.get("lastModifiedDateTime", "")),
                             u=str(item.get("webUrl", "")), s=int(item.get("size") or 0))
                shared = (item.get("shared") or {}).get("scope") if isinstance(item.get("shared"), dict) else None
                if shared:
                    entry["sh"] = str(shared)
                old = items.get(item_id, {})
                if old.get("v") == entry["v"] and old.get("sh") == entry.get("sh") and "r" in old:
                    entry["r"] = old["r"]  # same content, same sharing: the permissions were read already
                else:
                    try:
                        entry["r"] = self._restricted(drive_id, item_id, entry.get("sh"))
                    except FetchError as exc:
                        errors.append(f"{entry['n']}: permissions: {exc}")
                        entry["r"] = True  # fail closed; retried next sync (the cursor does not advance)
            else:
                continue  # a package (OneNote notebook) or another kind of item: not a document
            items[item_id] = entry
        return {"delta": delta_link, "root": root, "items": items}, errors

    def _restricted(self, drive_id: str, item_id: str, scope: str | None) -> bool:
        """Whether the source's permissions keep the file to named people (see the module's docstring)."""
        if scope in ("organization", "anonymous"):
            return False
        if self.source.user:
            return True  # a OneDrive file not shared with an organization-wide or anyone link
        if scope is None or not self.source.check_permissions:
            return False  # not shared: it has the site's permissions
        response = self._request(f"/drives/{drive_id}/items/{item_id}/permissions")
        if response.status_code != 200:
            raise FetchError(str(self._error(response)))
        for permission in self._body(response).get("value", []):
            link = permission.get("link") or {}
            if link.get("scope") in ("organization", "anonymous"):
                return False
            identities = [permission.get("grantedToV2") or {}, *(permission.get("grantedToIdentitiesV2") or [])]
            for identity in identities:
                if identity.get("siteGroup"):
                    return False  # one of the site's groups: the item kept the site's permissions
                for key in ("siteUser", "group", "user"):
                    principal = identity.get(key) or {}
                    login = str(principal.get("loginName", "")).lower()
                    name = str(principal.get("displayName", "")).lower()
                    if name in _EVERYONE_NAMES or any(e in login for e in _EVERYONE_LOGINS):
                        return False
        return True

    def changes(self, cursor: str | None) -> Changes:
        previous: dict[str, Any] = {}
        if cursor:
            try:
                previous = json.loads(cursor)
            except ValueError:
                previous = {}
            if previous.get("v") != _CURSOR_VERSION or previous.get("target") != (self.source.site or
                                                                                  self.source.user):
                previous = {}  # another target or format: start afresh (a full listing)
        state: dict[str, Any] = {"v": _CURSOR_VERSION, "target": self.source.site or self.source.user,
                                 "drives": {}}
        changed: list[DocumentRef] = []
        skipped: dict[str, str] = {}
        errors: list[str] = []
        self._targets = {}
        for drive, folder in self._drives():
            drive_id = str(drive["id"])
            tree, drive_errors = self._delta(drive_id, previous.get("drives", {}).get(drive_id))
            errors.extend(drive_errors)
            state["drives"][drive_id] = tree
            self._list_files(drive_id, folder, tree, changed, skipped)
        if self.source.site and self.source.pages:
            self._list_pages(changed, skipped)
        return Changes(changed=changed, deleted=[], cursor=json.dumps(state, separators=(",", ":")), complete=True,
                       skipped=skipped, errors=errors)

    def _list_files(self, drive_id: str, folder: str, tree: dict[str, Any], changed: list[DocumentRef],
                    skipped: dict[str, str]) -> None:
        items: dict[str, dict[str, Any]] = tree["items"]
        root = tree.get("root", "")
        paths: dict[str, str] = {}
        for item_id, entry in items.items():
            if not entry.get("d"):
                path = _path_in_tree(items, root, item_id)
                if path is not None:  # None: an ancestor is gone (deleted with its folder), so is the file
                    paths[item_id] = f"{folder}/{path}" if folder else path
        stems: dict[str, int] = {}
        for path in paths.values():
            stem = str(PurePosixPath(path).with_suffix("")).casefold()
            stems[stem] = stems.get(stem, 0) + 1
        for item_id, path in sorted(paths.items(), key=lambda kv: kv[1]):
            entry = items[item_id]
            suffix = PurePosixPath(path).suffix.lower()
            if stems[str(PurePosixPath(path).with_suffix("")).casefold()] > 1:
                path += suffix  # Leave.docx and Leave.pdf in one folder: ids Leave.docx and Leave.pdf
            if suffix not in SUPPORTED_SUFFIXES:
                skipped[path] = f"unsupported file type '{suffix or PurePosixPath(path).name}'"
                continue
            if int(entry.get("s", 0)) > self.max_bytes:
                skipped[path] = f"too large ({int(entry['s']):,} bytes > limit {self.max_bytes:,})"
                continue
            restricted = bool(entry.get("r"))
            version = str(entry.get("v", "")) + ("|restricted" if restricted else "")
            changed.append(DocumentRef(path, version, str(entry.get("u") or "") or None, restricted))
            self._targets[path] = _Target(drive_id=drive_id, item_id=item_id)

    def _list_pages(self, changed: list[DocumentRef], skipped: dict[str, str]) -> None:
        url = (f"/sites/{self._site_id}/pages/microsoft.graph.sitePage"
               "?$select=id,name,title,webUrl,eTag,lastModifiedDateTime,publishingState")
        used: set[str] = set()
        for page in self._pages_of(url, f"the pages of site {self.source.site} (pages: false syncs the libraries "
                                        f"only)"):
            page_id, web_url = str(page.get("id", "")), str(page.get("webUrl", ""))
            if not page_id:
                continue
            marker = f"/{PAGES_FOLDER.lower()}/"
            url_path = unquote(urlsplit(web_url).path)
            at = url_path.lower().find(marker)
            rel = url_path[at + len(marker):] if at >= 0 else str(page.get("name") or page_id)
            stem = "/".join(_safe_name(part) for part in str(PurePosixPath(rel).with_suffix("")).split("/") if part)
            path = f"{PAGES_FOLDER}/{stem or page_id}"
            if path.casefold() in used:
                path += f"-{page_id[:8]}"
            used.add(path.casefold())
            path += ".html"
            state = page.get("publishingState") or {}
            if str(state.get("versionId", "1.0")).startswith("0."):
                skipped[path] = "draft page, never published"
                continue
            version = str(page.get("eTag") or page.get("lastModifiedDateTime") or "")
            changed.append(DocumentRef(path, version, web_url or None))
            self._targets[path] = _Target(page_id=page_id, title=str(page.get("title") or page.get("name") or ""))

    # --- content ----------------------------------------------------------------------------------------------
    def fetch(self, ref: DocumentRef) -> bytes:
        target = self._targets.get(ref.path)
        if target is None:
            raise FetchError("not listed by this sync")
        if target.page_id:
            return self._page_html(target)
        response = self._request(f"/drives/{target.drive_id}/items/{target.item_id}/content")
        if response.status_code != 200:
            raise FetchError(str(self._error(response)))
        if len(response.content) > self.max_bytes:
            raise FetchError(f"too large ({len(response.content):,} bytes > limit {self.max_bytes:,})")
        return response.content

    def _page_html(self, target: _Target) -> bytes:
        response = self._request(f"/sites/{self._site_id}/pages/{target.page_id}/microsoft.graph.sitePage"
                                 "?$expand=canvasLayout")
        if response.status_code != 200:
            raise FetchError(str(self._error(response)))
        page = self._body(response)
        title = str(page.get("title") or target.title)
        return page_to_html(title, page.get("canvasLayout") or {}, str(page.get("description") or "")).encode()

    def close(self) -> None:
        self._http.close()


def page_to_html(title: str, canvas: Mapping[str, Any], description: str = "") -> str:
    """A site page as an HTML document: its title, its description, then its text web parts' HTML in the
    canvas's order (horizontal sections' columns, then the vertical section)."""
    parts: list[str] = []
    for section in canvas.get("horizontalSections") or []:
        for column in section.get("columns") or []:
            parts.extend(_texts(column.get("webparts") or []))
    vertical = canvas.get("verticalSection") or {}
    parts.extend(_texts(vertical.get("webparts") or []))
    escaped = html.escape(title)
    intro = f"<p>{html.escape(description)}</p>\n" if description else ""
    body = "\n".join(f"<section>{p}</section>" for p in parts)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escaped}</title></head>\n"
            f"<body><h1>{escaped}</h1>\n{intro}{body}\n</body></html>\n")


def _texts(webparts: list[Any]) -> list[str]:
    return [str(w.get("innerHtml") or "") for w in webparts
            if isinstance(w, dict) and str(w.get("@odata.type", "")).endswith("textWebPart") and w.get("innerHtml")]


def _path_in_tree(items: Mapping[str, Mapping[str, Any]], root: str, item_id: str) -> str | None:
    """An item's path in its drive from the tracked tree (names by parent id, up to the root)."""
    names: list[str] = []
    current = item_id
    for _ in range(256):  # deeper than SharePoint allows: a loop in the tree
        if current == root or (not root and current not in items):
            return "/".join(reversed(names))
        entry = items.get(current)
        if entry is None:
            return None
        names.append(_safe_name(str(entry.get("n", ""))))
        current = str(entry.get("p", ""))
    return None


def _safe_name(name: str) -> str:
    """One path segment of the mirror (SharePoint names cannot hold '/', but '.' or '..' must not escape)."""
    name = name.replace("/", "_").replace("\\", "_").strip()
    return "_" if name in ("", ".", "..") else name
