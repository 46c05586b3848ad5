"""Formats and robustness of ingestion: Word files, text in Latin-1 / Windows-1252, PDFs without metadata, and a
folder with nothing to index (files generated in the test, read by the real libraries)."""

from __future__ import annotations

from pathlib import Path

import docx
import pytest

from knowledge.chunking import chunk_document
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.ingest import NoDocuments, ingest
from knowledge.sources import DocumentSkipped, load_document, scan

MAX = 1_000_000


def pdf_bytes(lines: list[str], *, title: str | None = None) -> bytes:
    """A one-page PDF with one text line per entry (hand-built); ``title`` goes into its Info dictionary."""
    ops = ["BT /F1 12 Tf 72 720 Td"]
    for i, line in enumerate(lines):
        ops.append(("" if i == 0 else "0 -24 Td ") + f"({line}) Tj")
    ops.append("ET")
    stream = " ".join(ops).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title is not None:
        objects.append(b"<< /Title (%s) >>" % title.encode())
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    info = b" /Info 6 0 R" if title is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return out


def write_docx(path: Path, *, core_title: str = "") -> Path:
    document = docx.Document()
    document.core_properties.title = core_title
    document.add_paragraph("Expense policy", style="Title")
    document.add_paragraph("How to claim travel and meal costs.")
    document.add_heading("Per diem", level=1)
    document.add_paragraph("The daily meal allowance is EUR 60 in Europe.")
    document.add_paragraph("Keep every receipt", style="List Bullet")
    document.add_heading("Deadlines", level=2)
    document.add_paragraph("Claims are due within 30 days of the trip.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Country", "Rate"
    table.cell(1, 0).text, table.cell(1, 1).text = "Portugal", "EUR 50"
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


def test_a_word_document_is_read_with_its_title_headings_lists_and_tables(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "finance" / "expenses.docx")
    doc = load_document(path, tmp_path, max_bytes=MAX)
    assert doc.format == "docx" and doc.doc_id == "finance/expenses" and doc.knowledge_set == "finance"
    assert doc.title == "Expense policy"
    assert "# Per diem" in doc.text and "## Deadlines" in doc.text
    assert "- Keep every receipt" in doc.text and "Portugal | EUR 50" in doc.text
    chunks = chunk_document(doc.doc_id, doc.title, doc.text, target_words=40)
    by_heading = {c.heading: c.text for c in chunks}
    assert "EUR 60" in by_heading["Per diem"] and "30 days" in by_heading["Per diem › Deadlines"]

    write_docx(tmp_path / "named.docx", core_title="Travel and expenses")
    assert load_document(tmp_path / "named.docx", tmp_path, max_bytes=MAX).title == "Travel and expenses"


def test_a_corrupt_word_file_is_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 this zip is truncated")
    (tmp_path / "renamed.docx").write_bytes(b"just some text saved with the wrong extension")
    for name, reason in (("broken.docx", "unreadable Word document"), ("renamed.docx", "not a Word .docx")):
        with pytest.raises(DocumentSkipped) as exc:
            load_document(tmp_path / name, tmp_path, max_bytes=MAX)
        assert reason in exc.value.reason


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_text_in_a_western_single_byte_encoding_is_decoded_not_rejected(tmp_path: Path, encoding: str) -> None:
    text = ("# Reisekosten\n\nDie Pauschale beträgt 24 Euro pro Tag für Mitarbeiter im Außendienst. "
            "Le café est offert à l'accueil, même l'été.\n")
    if encoding == "cp1252":
        text += "\nThe taxi limit is 40 € per ride.\n"
    (tmp_path / "travel.md").write_bytes(text.encode(encoding))
    doc = load_document(tmp_path / "travel.md", tmp_path, max_bytes=MAX)
    assert doc.title == "Reisekosten"
    assert "beträgt 24 Euro pro Tag für Mitarbeiter im Außendienst" in doc.text
    assert "café" in doc.text and "l'été" in doc.text
    if encoding == "cp1252":
        assert "40 € per ride" in doc.text


def test_a_pdf_without_metadata_is_titled_from_its_first_line_or_its_file_name(tmp_path: Path) -> None:
    (tmp_path / "claims.pdf").write_bytes(pdf_bytes(["Expense claims", "Claims are due within 30 days."]))
    assert load_document(tmp_path / "claims.pdf", tmp_path, max_bytes=MAX).title == "Expense claims"

    # the first line is a sentence, not a heading: the file name
    (tmp_path / "travel-policy.pdf").write_bytes(pdf_bytes(["Book every trip through the portal.", "More text."]))
    assert load_document(tmp_path / "travel-policy.pdf", tmp_path, max_bytes=MAX).title == "Travel Policy"

    (tmp_path / "meta.pdf").write_bytes(pdf_bytes(["Something", "Claims are due within 30 days."],
                                                  title="Claims handbook"))
    assert load_document(tmp_path / "meta.pdf", tmp_path, max_bytes=MAX).title == "Claims handbook"


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


def test_an_empty_folder_is_a_clear_error_and_makes_no_version(store: IndexStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "logo.png").write_bytes(b"\x89PNG....")
    with pytest.raises(NoDocuments) as exc:
        ingest(store, empty, kb="t")
    assert "it has no documents" in str(exc.value) and "logo.png: unsupported file type" in str(exc.value)
    assert store.latest_version("t") is None


def test_a_folder_whose_documents_were_all_deleted_keeps_the_version_in_service(store: IndexStore,
                                                                                 tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "vpn.md").write_text("# VPN\n\nOpen NorthGate and sign in with your badge number.\n")
    assert ingest(store, kb, kb="t").version == 1
    (kb / "vpn.md").unlink()
    with pytest.raises(NoDocuments) as exc:
        ingest(store, kb, kb="t")
    assert "every document it had is gone" in str(exc.value) and "current index version is kept" in str(exc.value)
    assert store.latest_version("t") == 1
    docs, _ = scan(kb, max_bytes=MAX)
    assert docs == []


def test_a_slide_deck_is_read_slide_by_slide_with_tables_and_notes(tmp_path: Path) -> None:
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    title_slide = deck.slides.add_slide(deck.slide_layouts[0])
    title_slide.shapes.title.text = "Security training"
    title_slide.placeholders[1].text = "What every employee must know"
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Lost laptops"
    slide.placeholders[1].text_frame.text = "Report a lost laptop within one hour."
    slide.notes_slide.notes_text_frame.text = "Call the security desk on extension 4444."
    table = deck.slides.add_slide(deck.slide_layouts[5])
    table.shapes.title.text = "Contacts"
    grid = table.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    grid.cell(0, 0).text, grid.cell(0, 1).text = "Team", "Extension"
    grid.cell(1, 0).text, grid.cell(1, 1).text = "Security", "4444"
    deck.save(str(tmp_path / "training.pptx"))

    doc = load_document(tmp_path / "training.pptx", tmp_path, max_bytes=MAX)
    assert doc.format == "pptx" and doc.title == "Security training"
    assert "## Lost laptops" in doc.text and "Report a lost laptop within one hour." in doc.text
    assert "extension 4444" in doc.text and "Security | 4444" in doc.text
    chunks = {c.heading: c.text for c in chunk_document(doc.doc_id, doc.title, doc.text)}
    assert "one hour" in chunks["Lost laptops"]


def test_a_workbook_is_read_sheet_by_sheet_with_computed_values(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    rates = book.active
    rates.title = "Per diem"
    rates.append(["Country", "Meals (EUR)"])
    rates.append(["Portugal", 50])
    rates.append(["Germany", 60])
    holidays = book.create_sheet("Holidays")
    holidays.append(["Date", "Holiday"])
    holidays.append(["2026-12-25", "Christmas Day"])
    book.properties.title = "Travel rates"
    book.save(str(tmp_path / "rates.xlsx"))

    doc = load_document(tmp_path / "rates.xlsx", tmp_path, max_bytes=MAX)
    assert doc.format == "xlsx" and doc.title == "Travel rates"
    assert "## Per diem" in doc.text and "Germany | 60" in doc.text and "Christmas Day" in doc.text
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DocumentSkipped, match="unreadable Excel file"):
        load_document(tmp_path / "broken.xlsx", tmp_path, max_bytes=MAX)
