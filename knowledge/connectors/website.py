"""The ``website`` kind: a help center or an intranet site, from its sitemap or crawled from a start URL within
its own host, robots.txt respected.

- **Listing**: ``sitemap`` (a ``<urlset>`` or a ``<sitemapindex>`` of them, ``<lastmod>`` read) or
  ``start_url`` (links followed breadth-first, same scheme and host, below the start URL's folder, at most
  ``max_pages``). Every URL is checked against robots.txt (``urllib.robotparser``, for ``user_agent``); its
  ``Crawl-delay`` is honoured between requests.
- **Incremental**: the cursor keeps, per page, its ETag, Last-Modified, sitemap ``lastmod``, content hash and
  (when crawling) links. A page whose sitemap ``lastmod`` did not change is not requested; the others are asked
  with ``If-None-Match`` / ``If-Modified-Since``, and a ``304`` keeps the page as it was. A page gone from the
  listing, or answering ``404``/``410``, is deleted.
- **Rate limits**: ``429`` and ``503`` are retried after their ``Retry-After`` (seconds or an HTTP date; capped
  by ``max_retry_after_s``), up to ``max_retries`` times.
- HTML pages are read by the same HTML reader as files (:mod:`knowledge.sources`), PDFs and Word files too;
  a page cites its own URL.
"""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.robotparser import RobotFileParser

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

_SUFFIX_OF_TYPE = {"text/html": ".html", "application/xhtml+xml": ".html", "text/plain": ".txt",
                   "text/markdown": ".md", "application/pdf": ".pdf",
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
                   "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
                   "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx"}
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def path_for(url: str, suffix: str) -> str:
    """The mirror path of a page: its URL path (``/help/vpn`` -> ``help/vpn.html``, ``/`` -> ``index.html``),
    a query string kept as a short hash."""
    parsed = urlparse(url)
    path = parsed.path.strip("/")
    if not path or parsed.path.endswith("/"):
        path = f"{path}/index" if path else "index"
    stem = path[: -len(Path(path).suffix)] if Path(path).suffix.lower() in {".html", ".htm", ".pdf", ".docx", ".pptx", ".xlsx", ".md", ".txt"} else path
    if parsed.query:
        stem += "-" + hashlib.sha256(parsed.query.encode()).hexdigest()[:8]
    safe = "/".join(part if part not in ("", ".", "..") else "_" for part in stem.split("/"))
    return safe + suffix


class WebsiteSource(HttpSource):
    kind: Literal["website"]
    #: Exactly one of: a sitemap (``<urlset>`` or ``<sitemapindex>``), or a page to crawl from (links followed
    #: within its host and below its folder).
    sitemap: str | None = None
    start_url: str | None = None
    user_agent: str = "DeskmateBot/1.0"
    max_pages: int = Field(1000, ge=1)
    #: A bearer token for a site behind a login (environment variable or file).
    token_env: str | None = None
    token_file: Path | None = None

    @field_validator("sitemap", "start_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("must be an http(s):// URL")
            if parsed.password:
                raise ValueError("the URL holds a password or token: put it in token_env or token_file instead")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> WebsiteSource:
        if (self.sitemap is None) == (self.start_url is None):
            raise ValueError("give exactly one of 'sitemap' and 'start_url'")
        return self

    def open_connector(self, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        token = read_secret(self.name, "token", self.token_env, self.token_file, environ)
        return WebsiteConnector(self, token=token, max_bytes=max_bytes)


class WebsiteConnector:
    def __init__(self, source: WebsiteSource, *, token: str | None = None, max_bytes: int = 5_000_000,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        headers = {"User-Agent": source.user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = HttpClient.for_source(source, headers=headers, sleep=sleep, transport=transport)
        self._bodies: dict[str, bytes] = {}
        self._robots: RobotFileParser | None = None
        root = str(source.start_url or source.sitemap)
        parsed = urlparse(root)
        self._origin = f"{parsed.scheme}://{parsed.netloc}"
        start = urlparse(str(source.start_url)) if source.start_url else None
        self._scope = start.path.rsplit("/", 1)[0] + "/" if start else "/"

    @property
    def local_root(self) -> Path | None:
        return None

    # --- HTTP ---------------------------------------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET with Crawl-delay and Retry-After honoured; raises FetchError (also when still rate-limited after
        the retries)."""
        response = self._http.get(url, headers=headers or {})
        if response.status_code in RETRIED_STATUSES:
            raise FetchError(f"HTTP {response.status_code} after {self.source.max_retries} retries: {url}")
        return response

    def _load_robots(self) -> RobotFileParser:
        if self._robots is not None:
            return self._robots
        robots = RobotFileParser()
        try:
            response = self._get(f"{self._origin}/robots.txt")
        except FetchError as exc:
            raise SourceError(f"robots.txt: {exc}") from exc
        if response.status_code in (401, 403):  # as urllib.robotparser reads it: nothing may be fetched
            robots.parse(["User-agent: *", "Disallow: /"])
        elif response.status_code >= 500:
            raise SourceError(f"robots.txt answered HTTP {response.status_code}; not crawling")
        elif response.status_code == 200:
            robots.parse(response.text.splitlines())
        else:  # no robots.txt: everything may be fetched
            robots.parse([])
        delay = robots.crawl_delay(self.source.user_agent)
        self._http.min_interval_s = min(float(delay), 30.0) if delay else 0.0
        self._robots = robots
        return robots

    def _allowed(self, url: str) -> bool:
        return self._load_robots().can_fetch(self.source.user_agent, url)

    def _in_scope(self, url: str) -> bool:
        parsed = urlparse(url)
        return (f"{parsed.scheme}://{parsed.netloc}" == self._origin and parsed.path.startswith(self._scope)
                and parsed.scheme in ("http", "https"))

    # --- listing ------------------------------------------------------------------------------------------
    def _sitemap_urls(self, url: str, depth: int = 0) -> dict[str, str]:
        """Page URL -> lastmod (or "") from a sitemap or sitemap index."""
        try:
            response = self._get(url)
        except FetchError as exc:
            raise SourceError(f"sitemap {url}: {exc}") from exc
        if response.status_code != 200:
            raise SourceError(f"sitemap {url} answered HTTP {response.status_code}")
        try:
            root = ElementTree.fromstring(response.content)
        except ElementTree.ParseError as exc:
            raise SourceError(f"sitemap {url} is not valid XML ({exc})") from exc
        pages: dict[str, str] = {}
        if root.tag == f"{_SITEMAP_NS}sitemapindex" and depth < 3:
            for child in root.iter(f"{_SITEMAP_NS}loc"):
                if child.text:
                    pages.update(self._sitemap_urls(child.text.strip(), depth + 1))
            return pages
        for entry in root.iter(f"{_SITEMAP_NS}url"):
            loc, lastmod = entry.find(f"{_SITEMAP_NS}loc"), entry.find(f"{_SITEMAP_NS}lastmod")
            if loc is not None and loc.text:
                pages[loc.text.strip()] = (lastmod.text or "").strip() if lastmod is not None else ""
        return pages

    def changes(self, cursor: str | None) -> Changes:
        previous: dict[str, dict[str, Any]] = json.loads(cursor) if cursor else {}
        self._load_robots()
        state: dict[str, dict[str, Any]] = {}
        changed: list[DocumentRef] = []
        skipped: dict[str, str] = {}
        errors: list[str] = []
        if self.source.sitemap:
            listed = self._sitemap_urls(str(self.source.sitemap))
            queue = deque((u, m) for u, m in listed.items())
        else:
            queue = deque([(str(self.source.start_url), "")])
        seen: set[str] = set()
        while queue and len(state) < self.source.max_pages:
            url, lastmod = queue.popleft()
            url = urldefrag(url).url
            if url in seen:
                continue
            seen.add(url)
            if not self._allowed(url):
                log.info("source.website.robots_disallowed", source=self.source.name)
                continue
            old = previous.get(url)
            try:
                entry = self._visit(url, lastmod, old)
            except FetchError as exc:
                if old is not None:  # keep it as it was; retried next time
                    state[url] = old
                    changed.append(DocumentRef(old["path"], old["version"], url))
                errors.append(f"{url}: {exc}")
                continue
            if entry is None:  # gone (404/410) or not a document
                continue
            if "skip" in entry:
                skipped[entry["path"]] = entry["skip"]
                continue
            state[url] = entry
            changed.append(DocumentRef(entry["path"], entry["version"], url))
            if self.source.start_url:
                for link in entry.get("links", []):
                    if link not in seen and self._in_scope(link):
                        queue.append((link, ""))
        if errors and not changed:
            raise SourceError(f"no page could be read ({errors[0]})")
        return Changes(changed=changed, deleted=[], cursor=json.dumps(state, sort_keys=True), complete=True,
                       skipped=skipped, errors=errors)

    def _visit(self, url: str, lastmod: str, old: dict[str, Any] | None) -> dict[str, Any] | None:
        if old is not None and lastmod and old.get("lastmod") == lastmod:
            return old  # the sitemap says it has not changed since: not even requested
        headers: dict[str, str] = {}
        if old is not None:
            if old.get("etag"):
                headers["If-None-Match"] = old["etag"]
            if old.get("last_modified"):
                headers["If-Modified-Since"] = old["last_modified"]
        response = self._get(url, headers)
        if response.status_code == 304 and old is not None:
            return {**old, "lastmod": lastmod}
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code}")
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        suffix = _SUFFIX_OF_TYPE.get(ctype)
        final = urldefrag(str(response.url)).url
        if suffix is None:
            return {"path": urlparse(final).path.strip("/") or "index",
                    "skip": f"unsupported content type '{ctype or 'none'}'"}
        path = path_for(final, suffix)
        body = response.content
        if len(body) > self.max_bytes:
            return {"path": path, "skip": f"too large ({len(body):,} bytes > limit {self.max_bytes:,})"}
        self._bodies[path] = body
        entry: dict[str, Any] = {"path": path, "version": hashlib.sha256(body).hexdigest(), "lastmod": lastmod,
                                 "etag": response.headers.get("ETag", ""),
                                 "last_modified": response.headers.get("Last-Modified", "")}
        if self.source.start_url and suffix == ".html":
            entry["links"] = self._links(final, response.text)
        return entry

    @staticmethod
    def _links(base: str, html: str) -> list[str]:
        from bs4 import BeautifulSoup  # noqa: PLC0415 - the HTML parser, only when crawling

        soup = BeautifulSoup(html, "html.parser")
        links = []
        for anchor in soup.find_all("a", href=True):
            href = str(anchor["href"])
            if href.startswith(("mailto:", "javascript:", "tel:")):
                continue
            links.append(urldefrag(urljoin(base, href)).url)
        return links

    def fetch(self, ref: DocumentRef) -> bytes:
        body = self._bodies.pop(ref.path, None)
        if body is not None:
            return body
        if not ref.location:
            raise FetchError("no URL")
        response = self._get(ref.location)
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code}")
        return response.content

    def close(self) -> None:
        self._http.close()
