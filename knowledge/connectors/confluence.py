"""The ``confluence`` kind: pages (and their PDF/Office attachments) of chosen Confluence spaces, from Confluence
Cloud (REST API v2 + the v1 CQL search) or Confluence Server / Data Center (REST API v1).

- **Listing** (no bodies), every sync:

  - Cloud: ``GET /wiki/api/v2/spaces?keys=…`` (space ids), then ``GET /wiki/api/v2/spaces/{id}/pages?status=current``
    per space (version number, parent, web link; cursor pagination through ``_links.next`` / the ``Link``
    header), and one CQL search ``GET /wiki/rest/api/content/search?cql=space in (…) AND type in (page,
    attachment)&expand=version,container,restrictions.read.restrictions.user,restrictions.read.restrictions.group``
    for the pages' own read restrictions and the attachments (cursor in ``_links.next``).
  - Server / Data Center: ``GET /rest/api/content?spaceKey=…&type=page&expand=version,ancestors,
    restrictions.read.restrictions.user,restrictions.read.restrictions.group`` per space (``start``/``limit``,
    ``_links.next``), and the CQL search ``type=attachment`` for the attachments.

- **Incremental**: a page's body is fetched (``GET /wiki/api/v2/pages/{id}?body-format=storage``, Server
  ``GET /rest/api/content/{id}?expand=body.storage,version``) only when its version number changed; an attachment
  is downloaded only when its version changed. Every listing is complete, so a page or attachment that is gone
  from it (deleted, trashed, archived, moved to another space, no longer visible) is deleted.
- **Restrictions**: a page with read restrictions, or below a page that has them (Confluence applies view
  restrictions to the descendants), is ``restricted``; its attachments too. The inheritance is computed from the
  listing (parent ids / ancestors) — no call per page. Space permissions are not read: the source's own
  ``visibility`` covers a private space.
- **Format**: the storage format (XHTML with ``ac:``/``ri:`` elements) becomes an HTML page (title, headings,
  tables, code blocks, links and panels kept; macros that cannot be rendered are dropped, most with a short note).
- **Rate limits**: 429 (Confluence Cloud sends ``Retry-After``) and 503 are retried after the wait by
  :class:`~knowledge.connectors.http.HttpClient`.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlparse

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

#: How the connector waits for a Retry-After (looked up at call time, so tests can record the waits).
sleep: Callable[[float], None] = time.sleep

#: Attachment media types that become documents, with the file extension that picks the reader.
ATTACHMENT_TYPES = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}
_SUFFIX_TYPES = {suffix: media for media, suffix in ATTACHMENT_TYPES.items()}
#: Illustrations of a page (images, video, audio) are not documents: left out without a skip entry.
_ILLUSTRATION = ("image/", "video/", "audio/")
_RESTRICTIONS_EXPAND = "restrictions.read.restrictions.user,restrictions.read.restrictions.group"


class ConfluenceSource(HttpSource):
    """Spaces of a Confluence site. Cloud: ``email`` + an API token; Server / Data Center: a personal access
    token (sent as a Bearer token)."""

    kind: Literal["confluence"]
    #: ``cloud`` (https://acme.atlassian.net) or ``server`` (Server / Data Center, e.g. https://wiki.acme.com or
    #: https://acme.com/confluence with its context path).
    deployment: Literal["cloud", "server"] = "cloud"
    base_url: str
    #: The site's address for citations when ``base_url`` is not it: with a *scoped* Cloud API token the API is
    #: reached through ``https://api.atlassian.com/ex/confluence/<cloud id>`` while pages live on
    #: ``https://acme.atlassian.net``. Default: ``base_url``.
    web_url: str | None = None
    #: Space keys (``[HR, IT]``).
    spaces: list[str] = Field(min_length=1)
    #: PDF and Office attachments of the pages become documents of their own (citing their page).
    attachments: bool = True
    #: Cloud: the Atlassian account the API token belongs to.
    email: str | None = None
    #: Cloud: the account's API token; Server / Data Center: a personal access token.
    token_env: str | None = None
    token_file: Path | None = None
    #: Results asked per listing call (Cloud v2 allows 250; Server usually caps at 100, the CQL search at 50 or
    #: 100 with expansions: the connector follows the ``next`` links whatever the server returns).
    page_size: int = Field(100, ge=1, le=250)

    @model_validator(mode="before")
    @classmethod
    def _site_not_wiki(cls, data: Any) -> Any:
        """Cloud: ``https://acme.atlassian.net/wiki`` (the address people copy from the browser) means the site."""
        if isinstance(data, dict) and data.get("deployment", "cloud") == "cloud":
            data = dict(data)
            for key in ("base_url", "web_url"):
                if isinstance(data.get(key), str) and data[key].rstrip("/").endswith("/wiki"):
                    data[key] = data[key].rstrip("/").removesuffix("/wiki")
        return data

    @field_validator("base_url", "web_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http(s):// URL such as https://acme.atlassian.net")
        if parsed.password or parsed.username:
            raise ValueError("the URL holds credentials: put the token in token_env or token_file instead")
        return value.rstrip("/")

    @field_validator("spaces")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not re.fullmatch(r"~?[A-Za-z0-9_-]+", key):
                raise ValueError(f"'{key}' is not a space key (letters and digits, e.g. HR)")
        value = [key if key.startswith("~") else key.upper() for key in value]
        if len(set(value)) != len(value):
            raise ValueError("a space is listed twice")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> ConfluenceSource:
        if self.token_env is None and self.token_file is None:
            what = "an API token" if self.deployment == "cloud" else "a personal access token"
            raise ValueError(f"give token_env or token_file ({what})")
        if self.deployment == "cloud" and not self.email:
            raise ValueError("a Confluence Cloud source needs 'email' (the account of the API token)")
        return self

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        token = read_secret(self.name, "token", self.token_env, self.token_file, environ)
        assert token is not None  # the validator requires token_env or token_file
        return ConfluenceConnector(self, token=token, max_bytes=max_bytes)


# --- storage format -> HTML ------------------------------------------------------------------------------------
#: Macros whose rich body is shown as it is (panels, layout, expand sections…); info-like ones get a label.
_PANELS = {"info": "Info", "note": "Note", "warning": "Warning", "tip": "Tip", "panel": "", "expand": "",
           "details": "", "section": "", "column": "", "excerpt": "", "div": "", "span": "", "center": "",
           "ui-tabs": "", "ui-tab": "", "ui-expand": "", "auihelp": ""}
#: Navigation or decoration macros: dropped without a note (they carry no text of the page).
_SILENT = {"toc", "toc-zone", "children", "pagetree", "pagetreesearch", "anchor", "recently-updated",
           "contentbylabel", "livesearch", "search", "page-index", "create-from-template", "profile",
           "profile-picture", "space-details", "index", "navmap", "blog-posts", "excerpt-include-placeholder",
           "gallery", "view-file", "viewpdf", "viewdoc", "viewxls", "viewppt", "attachments", "multimedia",
           "widget", "chart", "roadmap", "lucidchart", "drawio", "gliffy", "status-label"}


def _text_of(tag: Any) -> str:
    return " ".join(str(tag.get_text(" ")).split()) if tag is not None else ""


def storage_to_html(storage: str, *, title: str, restricted: bool = False, web_url: str | None = None) -> str:
    """A page in Confluence's storage format as a standalone HTML document: ``<title>`` and an ``<h1>`` with the
    page title, the body's headings, paragraphs, lists, tables, links and code blocks kept, ``ac:``/``ri:``
    elements rendered (or dropped with a short note), ``<meta name="visibility" content="restricted">`` when the
    page is restricted."""
    from bs4 import BeautifulSoup, Tag  # noqa: PLC0415 - the HTML parser, only when a page is converted

    soup = BeautifulSoup(storage, "html.parser")

    def replace(tag: Tag, markup: str) -> None:
        tag.replace_with(BeautifulSoup(markup, "html.parser"))

    def param(tag: Tag, name: str) -> str:
        for child in tag.find_all("ac:parameter", recursive=False):
            if child.get("ac:name") == name:
                return _text_of(child)
        return ""

    # Innermost first, so a macro inside a panel is rendered before the panel is unwrapped.
    for macro in reversed(soup.find_all(["ac:structured-macro", "ac:macro"])):
        name = str(macro.get("ac:name", "")).lower()
        body = macro.find("ac:rich-text-body", recursive=False)
        plain = macro.find("ac:plain-text-body", recursive=False)
        if name in ("code", "noformat", "code-block"):
            code = plain.get_text() if plain is not None else ""
            caption = param(macro, "title")
            lang = param(macro, "language")
            head = f"<p><strong>{html.escape(caption)}</strong></p>" if caption else ""
            cls = f' class="language-{html.escape(lang)}"' if lang else ""
            replace(macro, f"{head}<pre><code{cls}>{html.escape(code)}</code></pre>")
        elif name in _PANELS or (body is not None and name not in _SILENT):
            label = _PANELS.get(name, "")
            caption = param(macro, "title")
            heading = " — ".join(x for x in (label, caption) if x)
            div = soup.new_tag("div", attrs={"class": f"confluence-{name or 'macro'}"})
            if heading:
                strong = soup.new_tag("strong")
                strong.string = heading
                para = soup.new_tag("p")
                para.append(strong)
                div.append(para)
            if body is not None:
                for child in list(body.contents):
                    div.append(child.extract())
            macro.replace_with(div)
        elif name == "status":
            macro.replace_with(f"[{param(macro, 'title') or param(macro, 'colour')}]")
        elif name in _SILENT:
            macro.decompose()
        else:
            note = soup.new_tag("p", attrs={"class": "confluence-dropped"})
            note.string = f"[Confluence macro “{name or 'unnamed'}” is not shown here; see the page.]"
            macro.replace_with(note)

    for link in soup.find_all("ac:link"):
        body = link.find(["ac:plain-text-link-body", "ac:link-body"])
        target = link.find(["ri:page", "ri:blog-post", "ri:attachment", "ri:url", "ri:space", "ri:user"])
        label = _text_of(body)
        href = ""
        if target is not None:
            if target.name == "ri:url":
                href = str(target.get("ri:value", ""))
            if not label:
                label = str(target.get("ri:content-title") or target.get("ri:filename") or target.get("ri:value")
                            or target.get("ri:space-key") or "")
            if not label and target.name == "ri:user":
                label = "(a user)"
        if str(link.get("ac:anchor", "")) and not label:
            label = str(link["ac:anchor"])
        anchor = soup.new_tag("a", attrs={"href": href} if href else {})
        anchor.string = label
        link.replace_with(anchor)

    for task_list in soup.find_all("ac:task-list"):
        task_list.name = "ul"
    for task in soup.find_all("ac:task"):
        done = _text_of(task.find("ac:task-status")) == "complete"
        body = task.find("ac:task-body")
        item = soup.new_tag("li")
        item.append(("[x] " if done else "[ ] "))
        if body is not None:
            for child in list(body.contents):
                item.append(child.extract())
        task.replace_with(item)

    for fallback_host in soup.find_all("ac:adf-extension"):
        fallback = fallback_host.find("ac:adf-fallback")
        if fallback is not None:
            fallback.name = "div"
            fallback_host.replace_with(fallback.extract())
        else:
            fallback_host.decompose()

    for emoticon in soup.find_all("ac:emoticon"):
        fallback_text = str(emoticon.get("ac:emoji-fallback", ""))
        emoticon.replace_with(fallback_text)
    for tag in soup.find_all(["ac:image", "ac:placeholder", "ac:parameter", "ac:task-id", "ac:task-status"]):
        tag.decompose()
    for tag in soup.find_all("time"):
        if not tag.get_text(strip=True) and tag.get("datetime"):
            tag.string = str(tag["datetime"])
    # Layout, inline comment markers and anything else of Confluence's own: keep what they hold.
    for tag in soup.find_all(lambda t: t.name.startswith(("ac:", "ri:"))):
        if tag.name.startswith("ri:"):
            tag.decompose()
        else:
            tag.unwrap()

    meta = [f"<meta charset=\"utf-8\"><title>{html.escape(title)}</title>"]
    if restricted:
        meta.append('<meta name="visibility" content="restricted">')
    if web_url:
        meta.append(f'<link rel="canonical" href="{html.escape(web_url, quote=True)}">')
    return (f"<!DOCTYPE html>\n<html><head>{''.join(meta)}</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{soup.decode()}\n</body></html>\n")


# --- paths --------------------------------------------------------------------------------------------------
def slug(text: str, fallback: str = "page") -> str:
    """``VPN: setup (Windows)`` -> ``vpn-setup-windows``; accents folded, at most 60 characters."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    value = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:60].strip("-")
    return value or fallback


def page_path(space_key: str, title: str, page_id: str) -> str:
    """``hr/vpn-setup-123456.html``: the space, the title (readable) and the page id (unique, stable)."""
    return f"{slug(space_key, 'space')}/{slug(title)}-{page_id}.html"


def attachment_path(page: str, filename: str, attachment_id: str, suffix: str) -> str:
    """``hr/vpn-setup-123456/guide-att789.pdf``: below its page's path, the file name and the attachment id."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    ident = attachment_id if attachment_id.startswith("att") else f"att{attachment_id}"
    return f"{page.removesuffix('.html')}/{slug(stem, 'file')}-{ident}{suffix}"


def _restricted_in(content: Mapping[str, Any]) -> bool:
    """The content's own read restrictions (users or groups) as the ``restrictions.read`` expansion shows them."""
    read = ((content.get("restrictions") or {}).get("read") or {}).get("restrictions") or {}
    for kind in ("user", "group"):
        entry = read.get(kind) or {}
        if entry.get("results") or int(entry.get("size") or 0) > 0:
            return True
    return False


class ConfluenceConnector:
    def __init__(self, source: ConfluenceSource, *, token: str, max_bytes: int = 5_000_000,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.cloud = source.deployment == "cloud"
        root = source.base_url
        # Cloud: the site is https://acme.atlassian.net, the wiki (web UI, v1 API, downloads) under /wiki.
        self.wiki = f"{root}/wiki" if self.cloud else root
        self.v1 = f"{self.wiki}/rest/api"
        #: Where readers open a page: ``_links.webui`` is relative to it.
        self.web = (f"{source.web_url}/wiki" if self.cloud else source.web_url) if source.web_url else self.wiki
        auth: httpx.Auth | None = None
        headers = {"Accept": "application/json", "User-Agent": "DeskmateBot/1.0"}
        if self.cloud:
            auth = httpx.BasicAuth(str(source.email), token)
        else:
            headers["Authorization"] = f"Bearer {token}"
        self._http = HttpClient.for_source(source, headers=headers, sleep=lambda seconds: sleep(seconds),
                                           transport=transport, auth=auth)
        #: path -> what fetch needs (page id and title, or the attachment's download link)
        self._targets: dict[str, dict[str, Any]] = {}

    @property
    def local_root(self) -> Path | None:
        return None

    # --- HTTP -------------------------------------------------------------------------------------------------
    def _listing(self, url: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One listing call's JSON; any failure is the source's (SourceError naming what to check)."""
        return self._listing_response(url, params)[0]

    def _listing_response(self, url: str,
                          params: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], httpx.Response]:
        try:
            response = self._http.get(url, params=params)
        except FetchError as exc:  # unreachable, or asked to wait longer than max_retry_after_s
            raise SourceError(f"Confluence at {self.source.base_url}: {exc}") from exc
        status = response.status_code
        if status == 401:
            who = "the email and API token" if self.cloud else "the personal access token"
            raise SourceError(f"Confluence at {self.source.base_url} rejected the credentials (HTTP 401): check "
                              f"{who} (token_env / token_file) and that base_url is the right site")
        if status == 403:
            raise SourceError(f"Confluence at {self.source.base_url} refused the request (HTTP 403): the account "
                              f"needs permission to view the spaces {', '.join(self.source.spaces)}")
        if status in RETRIED_STATUSES:
            raise SourceError(f"Confluence at {self.source.base_url} is still rate-limiting or unavailable "
                              f"(HTTP {status}) after {self.source.max_retries} retries")
        if status != 200:
            raise SourceError(f"Confluence at {self.source.base_url} answered HTTP {status} to "
                              f"{urlparse(url).path}")
        try:
            data = response.json()
        except ValueError as exc:
            raise SourceError(f"Confluence at {self.source.base_url} did not answer JSON for {urlparse(url).path}: "
                              "check base_url and deployment") from exc
        if not isinstance(data, dict):
            raise SourceError(f"unexpected answer from {urlparse(url).path}")
        return data, response

    def _pages_of(self, url: str, params: Mapping[str, Any], *, next_base: str) -> Iterator[dict[str, Any]]:
        """Every result of a paginated listing, following ``_links.next`` (else the ``Link: rel="next"``
        header) resolved against ``next_base``."""
        current: str | None = url
        query: Mapping[str, Any] | None = params
        for _ in range(100_000):
            if current is None:
                return
            data, response = self._listing_response(current, query)
            yield from (r for r in data.get("results", []) if isinstance(r, dict))
            following = (data.get("_links") or {}).get("next") or response.links.get("next", {}).get("url")
            if not following:
                current = None
            else:
                current = following if following.startswith(("http://", "https://")) else next_base + following
            query = None
        raise SourceError("pagination did not end")

    # --- listing ----------------------------------------------------------------------------------------------
    def changes(self, cursor: str | None) -> Changes:
        self._targets.clear()
        pages = self._cloud_pages() if self.cloud else self._server_pages()
        restricted_own = {pid for pid, page in pages.items() if page["restricted_own"]}
        attachments: list[dict[str, Any]] = []
        # Cloud's v2 listing has no restrictions: the search brings them (and the attachments); Server's listing
        # has them, so it searches only for attachments.
        types = (["page"] if self.cloud else []) + (["attachment"] if self.source.attachments else [])
        searched: set[str] = set()
        if types:
            for item in self._search(types):
                if item.get("type") == "page":
                    searched.add(str(item.get("id")))
                    if _restricted_in(item) and str(item.get("id")) in pages:
                        restricted_own.add(str(item["id"]))
                elif item.get("type") == "attachment":
                    attachments.append(item)
        if self.cloud:
            # The search index lags behind edits by seconds to minutes: a page it does not know yet has its
            # restrictions read on its own, so a new restricted page is never published as public meanwhile.
            for pid in sorted(set(pages) - searched):
                if self._read_restricted(pid):
                    restricted_own.add(pid)

        changed: list[DocumentRef] = []
        skipped: dict[str, str] = {}
        for pid, page in pages.items():
            restricted = self._inherits(pid, pages, restricted_own)
            page["restricted"] = restricted
            path = page["path"]
            version = f"{page['version']}{'+restricted' if restricted else ''}"
            self._targets[path] = {"page": pid, "title": page["title"], "location": page["location"]}
            changed.append(DocumentRef(path, version, page["location"], restricted))

        for item in attachments:
            container = item.get("container") or {}
            owner = pages.get(str(container.get("id", "")))
            if owner is None or item.get("status", "current") != "current":
                continue  # an attachment of a blog post, of an archived page or of a page outside the spaces
            filename = str(item.get("title", ""))
            extensions = item.get("extensions") or {}
            media = str(extensions.get("mediaType") or (item.get("metadata") or {}).get("mediaType") or "").lower()
            suffix = ATTACHMENT_TYPES.get(media)
            if suffix is None and "." in filename:
                suffix = filename.rsplit(".", 1)[1].lower()
                suffix = f".{suffix}" if f".{suffix}" in _SUFFIX_TYPES else None
            if suffix is None and media.startswith(_ILLUSTRATION):
                continue
            path = attachment_path(owner["path"], filename, str(item.get("id", "")), suffix or ".bin")
            if suffix is None:
                skipped[path] = f"unsupported attachment type '{media or filename}'"
                continue
            size = int(extensions.get("fileSize") or 0)
            if size > self.max_bytes:
                skipped[path] = f"too large ({size:,} bytes > limit {self.max_bytes:,})"
                continue
            download = str((item.get("_links") or {}).get("download") or "")
            if not download:
                skipped[path] = "no download link"
                continue
            number = (item.get("version") or {}).get("number", 0)
            restricted = bool(owner["restricted"])
            self._targets[path] = {"download": download, "location": owner["location"]}
            changed.append(DocumentRef(path, f"v{number}{'+restricted' if restricted else ''}", owner["location"],
                                       restricted))

        digest = hashlib.sha256("\n".join(sorted(f"{r.path}\t{r.version}" for r in changed)).encode()).hexdigest()
        log.info("source.confluence.listed", source=self.source.name, pages=len(pages),
                 attachments=len(changed) - len(pages), restricted=sum(1 for r in changed if r.restricted),
                 skipped=len(skipped))
        return Changes(changed=changed, deleted=[], cursor=digest, complete=True, skipped=skipped)

    @staticmethod
    def _inherits(pid: str, pages: Mapping[str, dict[str, Any]], restricted_own: set[str]) -> bool:
        """The page or one of its ancestors has read restrictions (Server lists the ancestors; Cloud's v2 listing
        gives the parent, followed up the tree)."""
        page = pages[pid]
        if pid in restricted_own or any(a in restricted_own for a in page.get("ancestors", ())):
            return True
        seen = {pid}
        parent = page.get("parent")
        while parent and parent not in seen:
            if parent in restricted_own:
                return True
            seen.add(parent)
            parent = (pages.get(parent) or {}).get("parent")
        return False

    def _cloud_pages(self) -> dict[str, dict[str, Any]]:
        keys = self.source.spaces
        site = self.source.base_url
        spaces: dict[str, dict[str, Any]] = {}
        for space in self._pages_of(f"{site}/wiki/api/v2/spaces", {"keys": ",".join(keys), "limit": 250},
                                    next_base=site):
            spaces[str(space.get("key"))] = space
        missing = [k for k in keys if k not in spaces]
        if missing:
            raise SourceError(f"space(s) {', '.join(missing)} not found on {site}, or not visible to the account: "
                              "check the space keys and the account's permission to view them")
        pages: dict[str, dict[str, Any]] = {}
        for key in keys:
            url = f"{site}/wiki/api/v2/spaces/{quote(str(spaces[key]['id']))}/pages"
            for item in self._pages_of(url, {"status": "current", "limit": self.source.page_size}, next_base=site):
                if item.get("status", "current") != "current":
                    continue
                pid, title = str(item.get("id")), str(item.get("title") or "Untitled")
                webui = str((item.get("_links") or {}).get("webui") or f"/pages/viewpage.action?pageId={pid}")
                pages[pid] = {"title": title, "version": int((item.get("version") or {}).get("number") or 0),
                              "parent": str(item["parentId"]) if item.get("parentId") else None,
                              "path": page_path(key, title, pid), "location": self.web + webui,
                              "restricted_own": False}
        return pages

    def _server_pages(self) -> dict[str, dict[str, Any]]:
        pages: dict[str, dict[str, Any]] = {}
        for key in self.source.spaces:
            params = {"spaceKey": key, "type": "page", "status": "current", "limit": self.source.page_size,
                      "start": 0, "expand": f"version,ancestors,{_RESTRICTIONS_EXPAND}"}
            found = False
            for item in self._pages_of(f"{self.v1}/content", params, next_base=self.wiki):
                found = True
                if item.get("status", "current") != "current":
                    continue
                pid, title = str(item.get("id")), str(item.get("title") or "Untitled")
                webui = str((item.get("_links") or {}).get("webui") or f"/pages/viewpage.action?pageId={pid}")
                pages[pid] = {"title": title, "version": int((item.get("version") or {}).get("number") or 0),
                              "ancestors": [str(a.get("id")) for a in item.get("ancestors") or []
                                            if isinstance(a, dict)],
                              "path": page_path(key, title, pid), "location": self.web + webui,
                              "restricted_own": _restricted_in(item)}
            if not found:
                self._check_space(key)
        return pages

    def _check_space(self, key: str) -> None:
        """A space that listed no page: empty, or not there (Server answers 404 for an unknown space)."""
        try:
            response = self._http.get(f"{self.v1}/space/{quote(key)}")
        except FetchError as exc:
            raise SourceError(f"Confluence at {self.source.base_url}: {exc}") from exc
        if response.status_code == 404:
            raise SourceError(f"space {key} not found on {self.source.base_url}, or not visible to the token's "
                              "user: check the space key and the user's permission to view it")

    def _read_restricted(self, pid: str) -> bool:
        """``GET …/content/{id}/restriction/byOperation/read``: the page's own read restrictions."""
        data = self._listing(f"{self.v1}/content/{quote(pid)}/restriction/byOperation/read",
                             {"expand": "restrictions.user,restrictions.group"})
        return _restricted_in({"restrictions": {"read": data}})

    def _search(self, types: list[str]) -> Iterator[dict[str, Any]]:
        """The CQL search of the chosen spaces' pages' restrictions and/or attachments."""
        spaces = ",".join(f'"{k}"' for k in self.source.spaces)
        kinds = ",".join(types)
        cql = f"space in ({spaces}) AND type in ({kinds})"
        expand = ["version", "container"]
        if "page" in types:
            expand.append(_RESTRICTIONS_EXPAND)
        params = {"cql": cql, "expand": ",".join(expand), "limit": min(self.source.page_size, 100)}
        return self._pages_of(f"{self.v1}/content/search", params, next_base=self.wiki)

    # --- content ----------------------------------------------------------------------------------------------
    def fetch(self, ref: DocumentRef) -> bytes:
        target = self._targets.get(ref.path)
        if target is None:
            raise FetchError("not in the last listing")
        if "download" in target:
            return self._download(str(target["download"]))
        pid = str(target["page"])
        if self.cloud:
            url, params = f"{self.source.base_url}/wiki/api/v2/pages/{quote(pid)}", {"body-format": "storage"}
        else:
            url, params = f"{self.v1}/content/{quote(pid)}", {"expand": "body.storage,version"}
        response = self._http.get(url, params=params)
        if response.status_code != 200:
            raise FetchError(f"page {pid}: HTTP {response.status_code}")
        try:
            data = response.json()
            storage = str(((data.get("body") or {}).get("storage") or {}).get("value") or "")
            title = str(data.get("title") or target["title"])
        except (ValueError, AttributeError) as exc:
            raise FetchError(f"page {pid}: the answer is not a page") from exc
        return storage_to_html(storage, title=title, restricted=ref.restricted,
                               web_url=str(target["location"])).encode("utf-8")

    def _download(self, link: str) -> bytes:
        url = link if link.startswith(("http://", "https://")) else self.wiki + link
        response = self._http.get(url)
        if response.status_code != 200:
            raise FetchError(f"attachment download: HTTP {response.status_code}")
        if len(response.content) > self.max_bytes:
            raise FetchError(f"too large ({len(response.content):,} bytes > limit {self.max_bytes:,})")
        return response.content

    def close(self) -> None:
        self._http.close()
