"""Reading a folder of documents: Markdown, plain text (in any common encoding), HTML, PDF, Word (.docx),
PowerPoint (.pptx) and Excel (.xlsx), validated and cleaned.

Every document gets a stable id (its path relative to the source root, without extension), a title, a citable
location and a knowledge set. A file that cannot be used raises :class:`DocumentSkipped` with a reason a person
can act on; :func:`scan` turns those into skip records so that one bad file never stops a run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import charset_normalizer
import yaml

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".pptx", ".xlsx"}
#: Rows read per Excel sheet (a sheet longer than that is cut, with a note in the text).
MAX_SHEET_ROWS = 5000
MIN_TEXT_CHARS = 20

#: An absolute file path (POSIX, Windows or ``file://``): how indexes built by earlier versions stored the
#: location of a document without a URL.
_ABSOLUTE_PATH = re.compile(r"^(?:file://|/|[A-Za-z]:[\\/]|\\\\)")
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_TEMPLATE_NOISE = [
    re.compile(r"\{%-?\s*comment\s*-?%\}.*?\{%-?\s*endcomment\s*-?%\}", re.S),
    re.compile(r"\{%-?\s*raw\s*-?%\}|\{%-?\s*endraw\s*-?%\}"),
    re.compile(r"\{%.*?%\}", re.S),  # Liquid / Jinja / Eleventy shortcodes
    re.compile(r"\{\{.*?\}\}", re.S),  # template expressions
    re.compile(r"<!--.*?-->", re.S),  # HTML comments
]


class DocumentSkipped(Exception):
    """A file that is not ingested, and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SourceDocument:
    doc_id: str
    path: Path
    title: str
    location: str
    text: str  # cleaned Markdown-ish text; headings as "#" lines
    format: str
    knowledge_set: str
    public: bool
    content_hash: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SkippedFile:
    path: str
    reason: str


def doc_id_for(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def discover(root: Path) -> Iterator[Path]:
    """Every file under ``root`` in a stable order, hidden files and folders excluded."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        yield path


def strip_template_noise(text: str) -> str:
    for pattern in _TEMPLATE_NOISE:
        text = pattern.sub("", text)
    return text


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DocumentSkipped(f"front matter is not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(meta, dict):
        meta = {}
    return meta, text[match.end():]


def _decode(raw: bytes) -> str:
    """Text from bytes: UTF-8 (with or without BOM), UTF-16 with a BOM, else the encoding detected by
    charset-normalizer (Latin-1 / Windows-1252 and the other common single-byte encodings)."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
    if b"\x00" in raw[:8192]:
        raise DocumentSkipped("binary content (NUL bytes) in a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    best = charset_normalizer.from_bytes(raw).best()
    if best is None:
        raise DocumentSkipped(f"not valid UTF-8 text (byte {first_bad}) and no other text encoding fits")
    return str(best)


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        m = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            return m.group(1).strip()
    return None


def _html_to_text(html: str) -> tuple[str, dict[str, Any]]:
    from bs4 import BeautifulSoup  # noqa: PLC0415 - only for HTML files

    soup = BeautifulSoup(html, "html.parser")
    meta: dict[str, Any] = {}
    if soup.title and soup.title.string:
        meta["title"] = soup.title.string.strip()
    for tag in soup.find_all("meta"):
        name, content = tag.get("name"), tag.get("content")
        if name and content:
            meta.setdefault(str(name).lower(), str(content))
    for tag in soup(["script", "style", "nav", "footer", "header", "noscript", "template"]):
        tag.decompose()
    body = soup.body or soup
    lines: list[str] = []
    for el in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "dt", "dd", "blockquote"]):
        if el.find_parent(["li", "td", "th", "blockquote", "dd"]) and el.name not in ("li",):
            continue
        text = " ".join(el.get_text(" ", strip=True).split())
        if not text:
            continue
        if el.name and el.name[0] == "h" and el.name[1:].isdigit():
            lines.append(f"\n{'#' * int(el.name[1:])} {text}\n")
        elif el.name == "li":
            if el.find_parent("li"):
                continue
            lines.append(f"- {text}")
        else:
            lines.append(f"{text}\n")
    return "\n".join(lines), meta


def _pdf_to_text(path: Path) -> tuple[str, dict[str, Any]]:
    from pypdf import PdfReader  # noqa: PLC0415 - only for PDF files
    from pypdf.errors import PdfReadError  # noqa: PLC0415

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise DocumentSkipped("encrypted PDF")
        pages = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                pages.append(f"## Page {number}\n\n{text}")
        info = reader.metadata
        title = str(info.title).strip() if info is not None and info.title else ""
    except DocumentSkipped:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DocumentSkipped(f"unreadable PDF ({exc.__class__.__name__}: {exc})") from exc
    if not title and pages:
        # No metadata title: the first line of the first page when it reads like a heading, never "Page 1".
        first = next((ln.strip() for ln in pages[0].splitlines()[1:] if ln.strip()), "")
        title = first if 0 < len(first) <= 120 and not first.endswith((".", ",", ";", ":")) else ""
    return "\n\n".join(pages), {"title": title or _title_from_name(path)}


def _title_from_name(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").strip().title() or path.name


def _docx_to_text(path: Path) -> tuple[str, dict[str, Any]]:
    """A Word document as Markdown-ish text: heading styles become "#" lines, list items "- ", tables rows of
    cells joined by " | "; the title from the document properties, else its "Title" paragraph."""
    import docx  # noqa: PLC0415 - python-docx (and lxml) only for Word files
    from docx.opc.exceptions import PackageNotFoundError  # noqa: PLC0415
    from docx.table import Table  # noqa: PLC0415
    from docx.text.paragraph import Paragraph  # noqa: PLC0415

    try:
        document = docx.Document(str(path))
        lines: list[str] = []
        title = (document.core_properties.title or "").strip()
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [" ".join(c.text.split()) for c in row.cells]
                    if any(cells):
                        lines.append(" | ".join(cells) + "\n")
                continue
            if not isinstance(block, Paragraph):
                continue
            text = " ".join(block.text.split())
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = re.match(r"^Heading (\d)$", style)
            if style == "Title":
                title = title or text
                lines.append(f"\n# {text}\n")
            elif level:
                lines.append(f"\n{'#' * int(level.group(1))} {text}\n")
            elif style.startswith("List"):
                lines.append(f"- {text}")
            else:
                lines.append(f"{text}\n")
    except (PackageNotFoundError, ValueError, KeyError, OSError) as exc:
        raise DocumentSkipped(f"unreadable Word document ({exc.__class__.__name__})") from exc
    except Exception as exc:  # noqa: BLE001 - lxml/zipfile errors of a corrupt file
        raise DocumentSkipped(f"unreadable Word document ({exc.__class__.__name__})") from exc
    return "\n".join(lines), ({"title": title} if title else {})


def _pptx_to_text(path: Path) -> tuple[str, dict[str, Any]]:
    """A slide deck as text: one "##" heading per slide (its title, else "Slide N"), its text boxes, tables
    (cells joined by " | ") and speaker notes; the title from the properties, else the first slide's title."""
    import pptx  # noqa: PLC0415 - python-pptx only for PowerPoint files

    try:
        deck = pptx.Presentation(str(path))
        title = (deck.core_properties.title or "").strip()
        lines: list[str] = []
        for number, slide in enumerate(deck.slides, start=1):
            heading_shape = slide.shapes.title
            heading = " ".join((heading_shape.text_frame.text if heading_shape is not None else "").split())
            title = title or heading
            lines.append(f"\n## {heading or f'Slide {number}'}\n")
            for shape in slide.shapes:
                if heading_shape is not None and shape.shape_id == heading_shape.shape_id:
                    continue
                if shape.has_text_frame:
                    for paragraph in shape.text_frame.paragraphs:
                        text = " ".join("".join(run.text for run in paragraph.runs).split())
                        if text:
                            lines.append(f"- {text}" if paragraph.level else f"{text}\n")
                if getattr(shape, "has_table", False):
                    for row in shape.table.rows:
                        cells = [" ".join(c.text.split()) for c in row.cells]
                        if any(cells):
                            lines.append(" | ".join(cells) + "\n")
            if slide.has_notes_slide:
                notes = " ".join(slide.notes_slide.notes_text_frame.text.split()) if \
                    slide.notes_slide.notes_text_frame is not None else ""
                if notes:
                    lines.append(f"{notes}\n")
    except Exception as exc:  # noqa: BLE001 - zip/XML errors of a corrupt file
        raise DocumentSkipped(f"unreadable PowerPoint file ({exc.__class__.__name__})") from exc
    return "\n".join(lines), ({"title": title} if title else {})


def _xlsx_to_text(path: Path) -> tuple[str, dict[str, Any]]:
    """A workbook as text: one "##" heading per sheet, then its rows (non-empty cells joined by " | "; the
    values Excel last computed, not formulas), at most :data:`MAX_SHEET_ROWS` rows per sheet."""
    import openpyxl  # noqa: PLC0415 - openpyxl only for Excel files

    try:
        book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
        title = str(book.properties.title or "").strip()
        lines: list[str] = []
        for sheet in book.worksheets:
            lines.append(f"\n## {sheet.title}\n")
            for number, row in enumerate(sheet.iter_rows(values_only=True)):
                if number >= MAX_SHEET_ROWS:
                    lines.append(f"(only the first {MAX_SHEET_ROWS} rows of this sheet are read)\n")
                    break
                cells = [" ".join(str(v).split()) for v in row if v is not None and str(v).strip()]
                if cells:
                    lines.append(" | ".join(cells) + "\n")
        book.close()
    except Exception as exc:  # noqa: BLE001 - zip/XML errors of a corrupt file
        raise DocumentSkipped(f"unreadable Excel file ({exc.__class__.__name__})") from exc
    return "\n".join(lines), ({"title": title} if title else {})


def _is_public(meta: dict[str, Any]) -> bool:
    value = str(meta.get("visibility", meta.get("access", "public"))).strip().lower()
    return value in ("public", "everyone", "all")


def location_for(doc_id: str, path: Path, meta: dict[str, Any], base_url: str | None, root: Path) -> str:
    """Where a reader finds the document: its ``url`` (front matter), else ``doc_base_url`` + its id, else its
    path relative to the folder it was ingested from (``handbook/travel.md``) — never the server's own path."""
    url = meta.get("url") or meta.get("permalink")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    if base_url:
        if isinstance(url, str) and url.startswith("/"):
            return base_url.rstrip("/") + url
        return f"{base_url.rstrip('/')}/{doc_id}"
    return path.relative_to(root).as_posix()


def is_url(location: str) -> bool:
    """A location to link to (``http(s)://``); anything else is shown as text."""
    return location.startswith(("http://", "https://"))


def display_location(location: str, doc_id: str = "") -> str:
    """A stored location as users may see it.

    Indexes built before locations were relative stored a document without a URL under its absolute path on the
    server (``/srv/deskmate/knowledge/handbook/travel.md``). Such a path is cut to the part below the source
    folder, found from ``doc_id`` (the path below it without the extension): ``handbook/travel.md``; without a
    matching ``doc_id``, to the file name.
    URLs, relative paths and site paths (``/handbook/travel``, from a ``doc_base_url`` without a host) are kept.
    """
    if not location or is_url(location) or not _ABSOLUTE_PATH.match(location):
        return location
    parts = [part for part in re.split(r"[\\/]+", location.removeprefix("file://")) if part]
    if not parts or Path(parts[-1]).suffix.lower() not in SUPPORTED_SUFFIXES:
        return location  # not a file path: a site path such as "/handbook/travel"
    tail = "/".join(parts[-(doc_id.count("/") + 1):]) if doc_id else parts[-1]
    return tail if doc_id and str(PurePosixPath(tail).with_suffix("")) == doc_id else parts[-1]


def load_document(path: Path, root: Path, *, max_bytes: int, base_url: str | None = None) -> SourceDocument:
    """Read, validate and clean one file; raises :class:`DocumentSkipped` with the reason."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentSkipped(f"unsupported file type '{suffix or path.name}'")
    try:
        size = path.stat().st_size
        if size == 0:
            raise DocumentSkipped("empty file")
        if size > max_bytes:
            raise DocumentSkipped(f"too large ({size:,} bytes > limit {max_bytes:,})")
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentSkipped(f"cannot be read ({exc.strerror or exc})") from exc

    doc_id = doc_id_for(path, root)
    meta: dict[str, Any] = {}
    if suffix == ".pdf":
        if not raw.startswith(b"%PDF"):
            raise DocumentSkipped("not a PDF file (no %PDF header)")
        text, meta = _pdf_to_text(path)
        fmt = "pdf"
    elif suffix == ".docx":
        if not raw.startswith(b"PK"):
            raise DocumentSkipped("not a Word .docx file (not a zip package)")
        text, meta = _docx_to_text(path)
        fmt = "docx"
    elif suffix in (".pptx", ".xlsx"):
        if not raw.startswith(b"PK"):
            raise DocumentSkipped(f"not a {suffix} file (not a zip package)")
        text, meta = _pptx_to_text(path) if suffix == ".pptx" else _xlsx_to_text(path)
        fmt = suffix[1:]
    else:
        decoded = _decode(raw)
        if suffix in (".html", ".htm"):
            text, meta = _html_to_text(strip_template_noise(decoded))
            fmt = "html"
        else:
            meta, body = split_front_matter(decoded)
            text = strip_template_noise(body)
            fmt = "markdown" if suffix in (".md", ".markdown") else "text"
            if fmt == "text" and "title" not in meta:
                first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
                if 0 < len(first) <= 120:
                    meta["title"] = first.lstrip("# ").strip()
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if len(re.sub(r"\s+", "", text)) < MIN_TEXT_CHARS:
        raise DocumentSkipped("no text content after cleaning")

    title = str(meta.get("title") or _first_heading(text) or _title_from_name(path))
    knowledge_set = str(meta.get("knowledge_set") or (doc_id.split("/")[0] if "/" in doc_id else "general"))
    return SourceDocument(
        doc_id=doc_id,
        path=path,
        title=title.strip(),
        location=location_for(doc_id, path, meta, base_url, root),
        text=text,
        format=fmt,
        knowledge_set=knowledge_set,
        public=_is_public(meta),
        content_hash=hashlib.sha256(raw).hexdigest(),
        meta={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))},
    )


def scan(root: Path, *, max_bytes: int, base_url: str | None = None) -> tuple[list[SourceDocument], list[SkippedFile]]:
    """Load every document under ``root``; duplicates (same content as an earlier file) are skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"knowledge folder not found: {root}")
    documents: list[SourceDocument] = []
    skipped: list[SkippedFile] = []
    seen: dict[str, str] = {}  # normalised text hash -> first file with it
    ids: dict[str, str] = {}  # doc id -> file
    for path in discover(root):
        rel = path.relative_to(root).as_posix()
        try:
            doc = load_document(path, root, max_bytes=max_bytes, base_url=base_url)
        except DocumentSkipped as exc:
            skipped.append(SkippedFile(rel, exc.reason))
            continue
        text_hash = hashlib.sha256(" ".join(doc.text.split()).encode()).hexdigest()
        if text_hash in seen:
            skipped.append(SkippedFile(rel, f"duplicate of {seen[text_hash]}"))
            continue
        if doc.doc_id in ids:
            skipped.append(SkippedFile(rel, f"same document id as {ids[doc.doc_id]}"))
            continue
        seen[text_hash] = ids[doc.doc_id] = rel
        documents.append(doc)
    return documents, skipped
