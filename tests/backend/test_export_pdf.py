"""GET /api/documents/{id}/export?format=pdf and a selection of PDFs: the stored originals (JPEG
turned by EXIF, multi-page TIFF, PDF) under their lines' current text, found again by pdfium."""

from __future__ import annotations

import io
import random
import tempfile
import tracemalloc
import zipfile
from typing import Any

import pypdfium2
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from backend.errors import AppError, ErrorCode
from backend.exports import pdf as pdf_export
from backend.exports.schemas import ExportFormat
from tests.backend.conftest import Actors, services_of
from tests.backend.documents import closing_each_page_image
from tests.backend.ground_truth import correct, ocr_line, store_lines
from tests.support.synthetic import to_tiff


def quadrants(size: tuple[int, int], shade: int = 0) -> Image.Image:
    """Red left half, blue top right, green bottom right: shows which way up a page is."""
    image = Image.new("RGB", size, (220, 30 + shade, 30))
    image.paste((30, 30, 220), (size[0] // 2, 0, size[0], size[1] // 2))
    image.paste((30, 200, 30), (size[0] // 2, size[1] // 2, size[0], size[1]))
    return image


def colours(image: Image.Image) -> list[str]:
    found = []
    for x, y in ((0.25, 0.5), (0.75, 0.25), (0.75, 0.75)):
        r, g, b = image.getpixel((int(x * image.width), int(y * image.height)))[:3]
        found.append(max((r, "red"), (g, "green"), (b, "blue"))[1])
    return found


def line_at(index: int, text: str, y: int) -> dict[str, Any]:
    return ocr_line(index, text, [[40, y], [400, y]], [[40, y - 40], [400, y - 40], [400, y + 10], [40, y + 10]])


def upload(actors: Actors, content: bytes, title: str) -> int:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("scan.bin", content, "application/octet-stream")},
        data={"title": title},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def export(actors: Actors, document_id: int) -> pypdfium2.PdfDocument:
    response = actors.client.get(
        f"/api/documents/{document_id}/export", params={"format": "pdf"}, headers=actors.archivist
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert ".pdf" in response.headers["content-disposition"]
    return pypdfium2.PdfDocument(response.content)


def page_text(pdf: pypdfium2.PdfDocument, index: int) -> list[str]:
    return str(pdf[index].get_textpage().get_text_range()).split("\r\n")


def test_jpeg_photo_turned_by_exif_is_embedded_as_stored_and_shown_upright(actors: Actors) -> None:
    upright = quadrants((600, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored a quarter turn anticlockwise: shown turned clockwise
    stored = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(stored, "JPEG", quality=95, exif=exif, dpi=(150, 150))
    document_id = upload(actors, stored.getvalue(), "Brief an Müller")
    store_lines(actors.client, document_id, 1, [line_at(0, "Liebe Mutter", 100), line_at(1, "Dein Hans", 300)])
    correct(actors.client, actors.archivist, document_id, 1, "Dein Heinrich ſ ꝛ")

    pdf = export(actors, document_id)
    assert len(pdf) == 1
    assert pdf[0].get_size() == (288.0, 192.0)  # 600 x 400 pixels at the photo's 150 dpi
    (image,) = [obj for obj in pdf[0].get_objects() if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE]
    assert bytes(image.get_data(decode_simple=False)) == stored.getvalue()
    assert colours(pdf[0].render(scale=1).to_pil()) == ["red", "blue", "green"]
    assert page_text(pdf, 0) == ["Liebe Mutter", "Dein Heinrich ſ ꝛ"]
    # Where the line is: its polygon spans x 40-400 and y 260-310 pixels (y down), at 150 dpi.
    textpage = pdf[0].get_textpage()
    start, count = textpage.search("Heinrich", match_case=True).get_next()
    left, bottom, _, _ = textpage.get_charbox(start)
    _, _, right, top = textpage.get_charbox(start + count - 1)
    scale = 150 / 72
    assert 40 <= left * scale and right * scale <= 401
    assert 259 <= (192 - top) * scale and (192 - bottom) * scale <= 311


def test_multi_page_tiff_and_pdf_originals_have_each_page_with_its_own_lines(actors: Actors) -> None:
    frames = [quadrants((600, 400), shade=n) for n in range(3)]
    tiff = io.BytesIO()
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    original = pypdfium2.PdfDocument.new()
    for _ in range(2):
        original.new_page(300, 200)
    pdf_bytes = io.BytesIO()
    original.save(pdf_bytes)
    for content, pages in ((tiff.getvalue(), 3), (pdf_bytes.getvalue(), 2)):
        document_id = upload(actors, content, f"{pages} Seiten")
        for number in range(1, pages + 1):
            store_lines(actors.client, document_id, number, [line_at(0, f"Seite {number} Zeile eins", 120)])
        pdf = export(actors, document_id)
        assert len(pdf) == pages
        for index in range(pages):
            assert page_text(pdf, index) == [f"Seite {index + 1} Zeile eins"]
            assert [obj.type for obj in pdf[index].get_objects()] == [
                pdfium_c.FPDF_PAGEOBJ_IMAGE,
                pdfium_c.FPDF_PAGEOBJ_TEXT,
            ]
        if pages == 3:
            assert colours(pdf[1].render(scale=1).to_pil()) == ["red", "blue", "green"]


def test_selection_of_pdfs_is_one_zip_with_a_pdf_per_document(actors: Actors) -> None:
    ids = []
    for n, title in enumerate(("Brief", "Brief")):  # the same title twice: the ids keep them apart
        image = io.BytesIO()
        quadrants((300, 200), shade=n).save(image, "PNG")
        document_id = upload(actors, image.getvalue(), title)
        store_lines(actors.client, document_id, 1, [line_at(0, f"Zeile von {n}", 100)])
        ids.append(document_id)
    response = actors.client.get("/api/exports", params={"ids": ids, "format": "pdf"}, headers=actors.archivist)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert names == [f"{ids[0]}_Brief.pdf", f"{ids[1]}_Brief.pdf"]
        for n, name in enumerate(names):
            pdf = pypdfium2.PdfDocument(archive.read(name))
            assert page_text(pdf, 0) == [f"Zeile von {n}"]


def test_page_that_cannot_be_drawn_keeps_its_text(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> None:
    original = pypdfium2.PdfDocument.new()
    original.new_page(300, 200)
    data = io.BytesIO()
    original.save(data)
    document_id = upload(actors, data.getvalue(), "Zu groß")
    store_lines(actors.client, document_id, 1, [line_at(0, "trotzdem lesbar", 120)])

    def refuse(*_: object, **__: object) -> Image.Image:
        raise AppError(ErrorCode.DOCUMENT_TOO_COMPLEX, "Page 1 of the PDF is too complex.")

    # The page renderers refuse the page, as they do one past their time or memory limit.
    monkeypatch.setattr(services_of(actors.client).exports.drawing.renderers, "render", refuse)
    pdf = export(actors, document_id)
    assert [obj.type for obj in pdf[0].get_objects()] == [pdfium_c.FPDF_PAGEOBJ_TEXT]
    assert page_text(pdf, 0) == ["trotzdem lesbar"]


def test_a_many_page_pdf_holds_one_page_image_at_a_time(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page image is closed before the next is drawn (Pillow's pixels live outside
    tracemalloc's view), and Python's allocations while the PDF goes out stay a few chunks'
    worth, far below the PDF's size."""
    frames = [Image.frombytes("RGB", (900, 900), random.Random(n).randbytes(900 * 900 * 3)) for n in range(6)]
    document_id = upload(actors, to_tiff(frames), "Rauschen")
    for number in range(1, 7):
        store_lines(actors.client, document_id, number, [line_at(0, f"Seite {number}", 120)])
    services = services_of(actors.client)
    # Once before measuring: the first PDF imports fontTools' tables (megabytes, once a process).
    with services.db.sessions() as session:
        for _ in services.exports.document(session, document_id, ExportFormat.PDF, services.clock()).body:
            pass
    drawn = closing_each_page_image(monkeypatch, pdf_export)
    with services.db.sessions() as session:
        download = services.exports.document(session, document_id, ExportFormat.PDF, services.clock())
    with tempfile.TemporaryFile() as body:
        tracemalloc.start()
        try:
            for chunk in download.body:
                body.write(chunk)
                del chunk
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        size = body.tell()
        body.seek(0)
        pdf = pypdfium2.PdfDocument(body.read())
    assert len(drawn) == 6 and len(pdf) == 6
    assert [page_text(pdf, index) for index in range(6)] == [[f"Seite {n}"] for n in range(1, 7)]
    assert size > 6 * 600_000  # noise: each page's JPEG is over 600 KB
    assert peak < 2 * 2**20 and peak < size / 3, (peak, size)
