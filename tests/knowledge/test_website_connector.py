"""The website kind against a real HTTP server on 127.0.0.1: a sitemap (and a crawl from a start URL), robots.txt
respected, a 429 with Retry-After honoured, re-syncs made of conditional requests (ETag -> 304) and sitemap
lastmod, changed and deleted pages — synced into a real index and searched."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import SourcesConfigError, parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever
from tests.fakes.http_server import serving


@dataclass
class Site:
    base: str = ""
    robots: str = "User-agent: *\nDisallow: /private/\nDisallow: /docs/private.html\n"
    pages: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # path -> (content type, body, etag)
    sitemap: list[tuple[str, str]] = field(default_factory=list)  # (path, lastmod)
    throttle_once: set[str] = field(default_factory=set)  # paths answering 429 Retry-After: 1 the first time
    requests: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def page(self, path: str, title: str, body: str, etag: str, links: tuple[str, ...] = ()) -> None:
        anchors = "".join(f"<li><a href='{link}'>{link}</a></li>" for link in links)
        html = (f"<html><head><title>{title}</title></head><body><nav>Menu</nav><h1>{title}</h1>"
                f"<p>{body}</p><ul>{anchors}</ul></body></html>")
        self.pages[path] = ("text/html; charset=utf-8", html.encode(), etag)

    def requested(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers, _ in self.requests if p == path]


def handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path
            site.requests.append((path, dict(self.headers.items()), time.monotonic()))
            if path == "/robots.txt":
                return self.send(200, site.robots.encode(), {"Content-Type": "text/plain"})
            if path == "/sitemap.xml":
                urls = "".join(f"<url><loc>{site.base}{p}</loc>" + (f"<lastmod>{m}</lastmod>" if m else "")
                               + "</url>" for p, m in site.sitemap)
                xml = ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/'
                       f'sitemap/0.9">{urls}</urlset>')
                return self.send(200, xml.encode(), {"Content-Type": "application/xml"})
            if path in site.throttle_once:
                site.throttle_once.discard(path)
                return self.send(429, b"slow down", {"Retry-After": "1"})
            if path not in site.pages:
                return self.send(404, b"not found", {"Content-Type": "text/plain"})
            ctype, body, etag = site.pages[path]
            if self.headers.get("If-None-Match") == etag:
                return self.send(304, b"", {"ETag": etag})
            return self.send(200, body, {"Content-Type": ctype, "ETag": etag})

    return Handler


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()
    with serving(handler_for(state)) as port:
        state.base = f"http://127.0.0.1:{port}"
        yield state


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


def test_a_help_center_syncs_from_its_sitemap(site: Site, store: IndexStore, tmp_path: Path) -> None:
    site.page("/help/vpn", "VPN", "Open NorthGate and sign in with your badge number.", '"v1"')
    site.page("/help/expenses", "Expenses", "Claims are due within 30 days of the trip.", '"e1"')
    site.page("/private/salaries", "Salaries", "Salary bands for every grade in the company.", '"s1"')
    site.pages["/help/logo.png"] = ("image/png", b"\x89PNG\r\n", '"l1"')
    site.sitemap = [("/help/vpn", ""), ("/help/expenses", "2026-11-30"), ("/private/salaries", ""),
                    ("/help/logo.png", ""), ("/help/gone", "")]
    site.throttle_once.add("/help/vpn")
    (source,) = parse_sources([{"name": "help", "kind": "website", "sitemap": f"{site.base}/sitemap.xml",
                                "knowledge_set": "it"}])
    work = tmp_path / "work"

    first = sync_source(store, source, [source], work_root=work, default_kb="t")
    assert first.status == "ok" and first.errors == []
    assert sorted(first.added) == ["help/help/expenses", "help/help/vpn"]
    assert [(s.path, s.reason) for s in first.skipped] == [("help/help/logo.png",
                                                            "unsupported content type 'image/png'")]
    assert site.requested("/private/salaries") == [], "robots.txt disallows it"
    (throttled, retried) = [t for p, _, t in site.requests if p == "/help/vpn"]
    assert retried - throttled >= 1.0, "Retry-After was honoured"
    top = Retriever(store).search("badge number NorthGate", kb="t", k=1)[0]
    assert (top.doc_id, top.title, top.location, top.knowledge_set) == (
        "help/help/vpn", "VPN", f"{site.base}/help/vpn", "it")
    assert "Menu" not in top.text

    site.requests.clear()
    again = sync_source(store, source, [source], work_root=work, default_kb="t")
    assert again.status == "unchanged" and again.index_version == first.index_version
    assert site.requested("/help/vpn")[0].get("If-None-Match") == '"v1"', "a conditional request (304)"
    assert site.requested("/help/expenses") == [], "its sitemap lastmod did not change: not requested"

    site.page("/help/vpn", "VPN", "Open NorthGate and sign in with your new smart card.", '"v2"')
    site.sitemap = [("/help/vpn", "")]
    third = sync_source(store, source, [source], work_root=work, default_kb="t")
    assert (third.updated, third.deleted, third.added) == (["help/help/vpn"], ["help/help/expenses"], [])
    assert "smart card" in Retriever(store).search("sign in NorthGate", kb="t", k=1)[0].text


def test_a_site_is_crawled_from_a_start_url_within_its_host_and_folder(site: Site, store: IndexStore,
                                                                          tmp_path: Path) -> None:
    site.page("/docs/index.html", "Handbook", "Welcome to the handbook of the company.", '"i"',
              links=("a.html", "/docs/b.html#part", "private.html", "/other/c.html", "http://example.invalid/x",
                     "mailto:help@example.com"))
    site.page("/docs/a.html", "Laptops", "Laptops are replaced every three years.", '"a"', links=("index.html",))
    site.page("/docs/b.html", "Leave", "Everyone has 25 days of paid leave a year.", '"b"')
    site.page("/docs/private.html", "Private", "Not for the bot to read at all, ever.", '"p"')
    site.page("/other/c.html", "Other", "Outside the start folder of the crawl.", '"c"')
    (source,) = parse_sources([{"name": "hb", "kind": "website", "start_url": f"{site.base}/docs/index.html"}])
    result = sync_source(store, source, [source], work_root=tmp_path / "work", default_kb="t")
    assert result.status == "ok", result.errors
    assert sorted(result.added) == ["hb/docs/a", "hb/docs/b", "hb/docs/index"]
    assert site.requested("/docs/private.html") == [] and site.requested("/other/c.html") == []
    assert len(site.requested("/docs/b.html")) == 1


def test_an_unreachable_site_fails_the_run_and_bad_settings_are_refused(store: IndexStore, tmp_path: Path) -> None:
    (source,) = parse_sources([{"name": "down", "kind": "website", "sitemap": "http://127.0.0.1:9/sitemap.xml",
                                "max_retries": 0}])
    result = sync_source(store, source, [source], work_root=tmp_path / "work", default_kb="t")
    assert result.status == "failed" and "robots.txt: ConnectError" in result.errors[0]
    with pytest.raises(SourcesConfigError, match="give exactly one of 'sitemap' and 'start_url'"):
        parse_sources([{"name": "w", "kind": "website"}])
    with pytest.raises(SourcesConfigError, match="key 'sitemap' Value error, must be an http"):
        parse_sources([{"name": "w", "kind": "website", "sitemap": "ftp://x/sitemap.xml"}])
