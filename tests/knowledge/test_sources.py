"""Reading documents: formats, front matter, template noise, ids, locations and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.sources import DocumentSkipped, display_location, load_document, scan

MAX = 1_000_000


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_markdown_front_matter_and_template_noise(tmp_path: Path) -> None:
    write(tmp_path, "travel/per-diem.md", "---\ntitle: Per diem\nurl: https://wiki.example/per-diem\n---\n"
          "{% include callout.html %}\n# Per diem\n\nMeals are {{ site.rate }}covered at EUR 60 a day.\n")
    doc = load_document(tmp_path / "travel/per-diem.md", tmp_path, max_bytes=MAX)
    assert doc.doc_id == "travel/per-diem"
    assert doc.title == "Per diem"
    assert doc.location == "https://wiki.example/per-diem"
    assert "{%" not in doc.text and "{{" not in doc.text and "EUR 60" in doc.text
    assert doc.knowledge_set == "travel" and doc.public


def test_location_falls_back_to_base_url_then_the_path_below_the_source_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "it/vpn.md", "# VPN\n\nConnect with NorthGate before opening the intranet.\n")
    with_base = load_document(path, tmp_path, max_bytes=MAX, base_url="https://handbook.example/")
    assert with_base.location == "https://handbook.example/it/vpn"
    assert load_document(path, tmp_path, max_bytes=MAX).location == "it/vpn.md"


def test_a_document_without_url_is_located_relative_to_its_folder_never_by_a_server_path(tmp_path: Path) -> None:
    root = (tmp_path / "srv" / "deskmate" / "knowledge").resolve()
    write(root, "handbook/travel.md", "---\ntitle: Travel\n---\n# Travel\n\nBook trains through the portal.\n")
    write(root, "top.txt", "Office hours\n\nThe office opens at eight every weekday.\n")
    docs, skipped = scan(root, max_bytes=MAX)
    assert skipped == []
    locations = {d.doc_id: d.location for d in docs}
    assert locations == {"handbook/travel": "handbook/travel.md", "top": "top.txt"}
    assert not any(str(tmp_path) in loc or loc.startswith("/") for loc in locations.values())


@pytest.mark.parametrize(
    ("stored", "doc_id", "shown"),
    [
        ("/srv/deskmate/knowledge/handbook/travel.md", "handbook/travel", "handbook/travel.md"),  # earlier indexes
        ("/srv/deskmate/knowledge/top.txt", "top", "top.txt"),
        ("C:\\deskmate\\knowledge\\it\\vpn.md", "it/vpn", "it/vpn.md"),
        ("file:///srv/kb/finance/claims.pdf", "finance/claims", "finance/claims.pdf"),
        ("/srv/kb/x.md", "a/b/x", "x.md"),  # a doc id that does not match: the file name only
        ("/srv/kb/x.md", "", "x.md"),
        ("handbook/travel.md", "handbook/travel", "handbook/travel.md"),  # already relative
        ("https://wiki.example/travel.md", "travel", "https://wiki.example/travel.md"),
        ("/handbook/travel", "handbook/travel", "/handbook/travel"),  # a site path (doc_base_url without a host)
        ("", "x", ""),
    ],
)
def test_stored_locations_are_shown_without_the_server_path(stored: str, doc_id: str, shown: str) -> None:
    assert display_location(stored, doc_id) == shown


def test_html_text_and_pdf(tmp_path: Path) -> None:
    write(tmp_path, "it/help.html", "<html><head><title>Helpdesk</title><meta name='visibility' content='restricted'>"
          "<script>var x=1;</script></head><body><nav>menu</nav><h1>Helpdesk</h1><h2>Hours</h2>"
          "<p>Open 8:00 to 18:00 Lisbon time.</p><ul><li>Call 1234</li></ul></body></html>")
    html = load_document(tmp_path / "it/help.html", tmp_path, max_bytes=MAX)
    assert html.title == "Helpdesk" and not html.public
    assert "## Hours" in html.text and "8:00 to 18:00" in html.text and "var x" not in html.text and "menu" not in html.text

    write(tmp_path, "notes.txt", "Office keys\n\nAsk reception for a key card on your first day.\n")
    txt = load_document(tmp_path / "notes.txt", tmp_path, max_bytes=MAX)
    assert txt.title == "Office keys" and txt.knowledge_set == "general"

    pdf = _tiny_pdf("Expense claims are due within 30 days.")
    write(tmp_path, "finance/claims.pdf", pdf)
    doc = load_document(tmp_path / "finance/claims.pdf", tmp_path, max_bytes=MAX)
    assert "30 days" in doc.text and doc.format == "pdf"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"", "empty file"),
        ("noise.md", bytes(range(1, 256)) * 3, "no other text encoding fits"),  # Latin-1 text is decoded
        ("binary.md", b"\x00\x01\x02binary" * 10, "binary content"),
        ("image.png", b"\x89PNG....", "unsupported file type"),
        ("fake.pdf", b"this is not a pdf at all, just text", "not a PDF"),
        ("broken.pdf", b"%PDF-1.4\n garbage garbage", "unreadable PDF"),
        ("only-noise.md", b"---\ntitle: x\n---\n{% include a.html %}\n", "no text content"),
        ("bad-yaml.md", b"---\ntitle: a: b: c\n---\nSome text that is long enough to count.\n", "front matter"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    write(tmp_path, name, content)
    with pytest.raises(DocumentSkipped) as exc:
        load_document(tmp_path / name, tmp_path, max_bytes=MAX)
    assert reason in exc.value.reason


def test_scan_keeps_going_past_bad_files_and_skips_oversized_and_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# A\n\nThe first document has enough text.\n")
    write(tmp_path, "copy/a.md", "# A\n\nThe first document has enough text.\n")
    write(tmp_path, "big.md", "# Big\n\n" + "word " * 400)
    write(tmp_path, "bad.md", b"\xff\xfe\x00\x00\x00")
    write(tmp_path, ".hidden/secret.md", "# Hidden\n\nNot to be ingested at all.\n")
    docs, skipped = scan(tmp_path, max_bytes=1000)
    assert [d.doc_id for d in docs] == ["a"]
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["copy/a.md"] == "duplicate of a.md"
    assert reasons["big.md"].startswith("too large")
    assert "bad.md" in reasons
    assert not any("hidden" in p for p in reasons)


def test_the_bundled_sample_reads_cleanly() -> None:
    docs, skipped = scan(SAMPLE_KNOWLEDGE_DIR, max_bytes=MAX)
    assert skipped == []
    assert len(docs) >= 20
    restricted = {d.doc_id for d in docs if not d.public}
    assert restricted and all(d.startswith(("engineering/", "security/")) for d in restricted)


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` (hand-built, so no PDF writer is needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out
