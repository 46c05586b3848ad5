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
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.robotparser import RobotFileParser

import httpx

from bot.core.log import get_logger
from knowledge.connectors.base import Changes, DocumentRef, FetchError, SourceError
from knowledge.connectors.config import WebsiteSource

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


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


class WebsiteConnector:
    def __init__(self, source: WebsiteSource, *, token: str | None = None, max_bytes: int = 5_000_000,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self._sleep = sleep
        headers = {"User-Agent": source.user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(headers=headers, timeout=source.timeout_s, follow_redirects=True,
                                    transport=transport)
        self._bodies: dict[str, bytes] = {}
        self._robots: RobotFileParser | None = None
        self._delay = 0.0
        self._last_request = 0.0
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
        """GET with Crawl-delay and Retry-After honoured; raises FetchError."""
        for attempt in range(self.source.max_retries + 1):
            wait = self._delay - (time.monotonic() - self._last_request)
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()
            try:
                response = self._client.get(url, headers=headers or {})
            except httpx.HTTPError as exc:
                raise FetchError(f"{exc.__class__.__name__} requesting {url}") from exc
            if response.status_code in (429, 503) and attempt < self.source.max_retries:
                delay = retry_after_seconds(response.headers.get("Retry-After"), default=2.0 ** attempt)
                if delay > self.source.max_retry_after_s:
                    raise FetchError(f"HTTP {response.status_code}: Retry-After {delay:.0f} s is longer than "
                                     f"max_retry_after_s ({self.source.max_retry_after_s:g})")
                log.info("source.website.retry_after", source=self.source.name, status=response.status_code,
                         seconds=round(delay, 2))
                self._sleep(delay)
                continue
            return response
        raise FetchError(f"HTTP {response.status_code} after {self.source.max_retries} retries: {url}")

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
        self._delay = min(float(delay), 30.0) if delay else 0.0
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
        self._client.close()
