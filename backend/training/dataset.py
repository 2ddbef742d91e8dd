"""Training data from the archive: which lines are ground truth, the held-out pages, the ZIP.

Ground truth (DESIGN of issue 14): a line a person corrected or confirmed (``text`` set), or
any line of a page a person reviewed (its current text); never a line of a document in the
trash, and never a line whose text is blank (nothing to learn; the OCR service counts only
lines with text too). A recognition run takes the ground-truth lines of every document, a
writer run those of the writer's documents, a segmentation run every line of the reviewed
pages (their positions are what it learns).

The counts are one grouped query each (the training overview asks on every load); the ZIP is
written entry by entry into a file, one page image in memory at a time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, BinaryIO

from lxml import etree
from sqlalchemy import ColumnElement, Select, Subquery, and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from backend.db import UtcDateTime
from backend.documents.models import Document, Line, Page
from backend.documents.pages import record_sizes, seekable_original
from backend.documents.render import PdfRenderers, RenderLimits, fitted, render_ocr_page
from backend.errors import AppError, ErrorCode
from backend.storage import Storage
from backend.training.models import TrainingKind
from backend.transcripts.geometry import clamp_points, joined
from backend.transcripts.text import clean_text

log = logging.getLogger(__name__)

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_SCHEMA_LOCATION = f"{PAGE_NS} {PAGE_NS}/pagecontent.xsd"
# PNG is lossless at every level; level 1 writes a scanned page about 4× faster than the
# default 6 for some 20 % more bytes (an A4 page at 300 dpi with paper noise: 1.1 s and 6.4 MB
# against 3.9 s and 5.4 MB), and the ZIP travels only once, to the OCR service.
_PNG_LEVEL = 1
# A page the backend's renderer refuses (its own time, memory and pixel limits, or a damaged
# page): the OCR service may still have read it, so it can have ground truth.
_UNDRAWABLE = frozenset({ErrorCode.DOCUMENT_TOO_COMPLEX, ErrorCode.CORRUPT_DOCUMENT, ErrorCode.PAGE_TOO_LARGE})


@dataclass(frozen=True)
class EligiblePage:
    page_id: int
    document_id: int
    page_number: int
    lines: int  # ground-truth lines on it (segmentation: all its lines)


@dataclass(frozen=True)
class GroundTruthLine:
    order_index: int
    text: str
    baseline: list[Any]
    polygon: list[Any]


@dataclass(frozen=True)
class ZipSummary:
    pages: int
    lines: int


class NotEnoughPagesError(ValueError):
    """Too few eligible pages to hold out ``min_pages`` and still train on one."""

    def __init__(self, missing: int, min_pages: int) -> None:
        super().__init__(
            f"{missing} more page(s) with corrected lines are needed: {min_pages} are held out "
            "to judge the new model and at least one is trained on."
        )
        self.missing = missing


# --- which lines count ------------------------------------------------------------------------


def _ground_truth() -> ColumnElement[bool]:
    """The line is ground truth: corrected or confirmed by a person, or on a reviewed page."""
    return or_(Line.text.is_not(None), Page.reviewed_at.is_not(None))


def _has_text() -> ColumnElement[bool]:
    return func.trim(func.coalesce(Line.text, Line.ocr_text)) != ""


def _lines_of(kind: TrainingKind) -> ColumnElement[bool]:
    if kind is TrainingKind.SEGMENTATION:
        return Page.reviewed_at.is_not(None)
    return and_(_ground_truth(), _has_text())


def _data_lines(kind: TrainingKind) -> Subquery:
    """(page id, corrected at) of every line of ``kind``'s data, documents in the trash included.

    Two parts, each read through a partial index rather than by a scan of every line (the
    overview asks on every load; lines are wide rows with their outlines): corrected lines of
    pages not reviewed (``ix_lines_corrected_page_id``), and the lines of reviewed pages
    (``ix_pages_reviewed_at``, then the lines by page).
    """
    # IN, not a join: SQLite then reads the reviewed pages first, also without table statistics.
    reviewed = select(Line.page_id, Line.corrected_at).where(
        Line.page_id.in_(select(Page.id).where(Page.reviewed_at.is_not(None)))
    )
    if kind is TrainingKind.SEGMENTATION:
        return reviewed.subquery()
    corrected = (
        select(Line.page_id, Line.corrected_at)
        .select_from(Line)
        .join(Page, Page.id == Line.page_id)
        .where(Line.text.is_not(None), Page.reviewed_at.is_(None), func.trim(Line.text) != "")
    )
    return union_all(corrected, reviewed.where(_has_text())).subquery()


def _counted(kind: TrainingKind, *columns: Any) -> Select[Any]:
    """Lines of ``kind``'s data per page (of documents not in the trash), with ``columns``."""
    lines = _data_lines(kind)
    return (
        select(*columns, Page.id, Page.document_id, Page.number, func.count())
        .select_from(lines)
        .join(Page, Page.id == lines.c.page_id)
        .join(Document, Document.id == Page.document_id)
        .where(Document.deleted_at.is_(None))
        .group_by(*columns, Page.id, Page.document_id, Page.number)
        .order_by(*columns, Page.document_id, Page.number)
    )


def eligible_pages(session: Session, kind: TrainingKind, writer_id: int | None = None) -> list[EligiblePage]:
    """The pages with data for a ``kind`` run, in document and page order; ``writer_id``: only
    that writer's documents (a writer run needs it)."""
    if kind is TrainingKind.WRITER and writer_id is None:
        raise ValueError("a writer run's data needs the writer")
    statement = _counted(kind)
    if writer_id is not None:
        statement = statement.where(Document.writer_id == writer_id)
    return [
        EligiblePage(page_id, document_id, number, lines)
        for page_id, document_id, number, lines in session.execute(statement)
    ]


def eligible_by_writer(session: Session) -> dict[int, list[EligiblePage]]:
    """Every writer's eligible pages for a writer run, in one query (writers without any: absent)."""
    statement = _counted(TrainingKind.WRITER, Document.writer_id).where(Document.writer_id.is_not(None))
    rows = session.execute(statement).all()
    return {
        writer_id: [
            EligiblePage(page_id, document_id, number, lines) for _, page_id, document_id, number, lines in group
        ]
        for writer_id, group in groupby(rows, key=lambda row: row[0])
    }


def new_lines_by_writer(session: Session, since: Mapping[int, datetime | None]) -> dict[int, int]:
    """Ground-truth lines of each writer in ``since`` corrected or reviewed after the writer's
    moment there (None: all of them), in one query; a writer with none is absent."""
    lines = _data_lines(TrainingKind.WRITER)
    undated = [writer_id for writer_id, when in since.items() if when is None]
    dated = {writer_id: when for writer_id, when in since.items() if when is not None}
    recent: list[ColumnElement[bool]] = []
    if undated:
        recent.append(Document.writer_id.in_(undated))
    if dated:
        # Each writer's own moment (NULL for the undated ones, whose lines all count above).
        moment = case({w: literal(when, UtcDateTime()) for w, when in dated.items()}, value=Document.writer_id)
        recent.append(or_(lines.c.corrected_at > moment, Page.reviewed_at > moment))
    if not recent:
        return {}
    statement = (
        select(Document.writer_id, func.count())
        .select_from(lines)
        .join(Page, Page.id == lines.c.page_id)
        .join(Document, Document.id == Page.document_id)
        .where(Document.deleted_at.is_(None), Document.writer_id.in_(list(since)), or_(*recent))
        .group_by(Document.writer_id)
    )
    return {writer_id: count for writer_id, count in session.execute(statement) if writer_id is not None}


def new_lines_since(session: Session, writer_id: int, since: datetime | None) -> int:
    """Ground-truth lines of the writer corrected or reviewed after ``since`` (None: all of them)."""
    return new_lines_by_writer(session, {writer_id: since}).get(writer_id, 0)


def ground_truth(session: Session, page_id: int) -> list[GroundTruthLine]:
    """The page's ground-truth lines in reading order (none if its document is in the trash)."""
    rows = session.execute(
        select(Line.order_index, Line.text, Line.ocr_text, Line.baseline, Line.polygon)
        .join(Page, Page.id == Line.page_id)
        .join(Document, Document.id == Page.document_id)
        .where(Page.id == page_id, Document.deleted_at.is_(None), _lines_of(TrainingKind.RECOGNITION))
        .order_by(Line.order_index)
    )
    return [
        GroundTruthLine(index, text if text is not None else ocr_text, baseline, polygon)
        for index, text, ocr_text, baseline, polygon in rows
    ]


# --- the held-out pages -----------------------------------------------------------------------


def heldout_shortfall(pages: Sequence[EligiblePage] | int, min_pages: int) -> int:
    """Eligible pages missing before ``min_pages`` can be held out with a page left to train on
    (0: enough). ``pages``: the eligible pages or their number."""
    count = pages if isinstance(pages, int) else len(pages)
    return max(0, min_pages + 1 - count)


def heldout_count(pages: int, share: float, min_pages: int) -> int:
    """How many of ``pages`` eligible pages are held out: ``share`` of them (rounded up), at
    least ``min_pages``, and never all of them."""
    return max(0, min(pages - 1, max(min_pages, math.ceil(share * pages))))


def _rank(seed: int, page_id: int) -> bytes:
    # A page's place depends on the seed and its own id only: the same seed picks the same
    # pages whatever order they come in, and adding pages never reshuffles the others.
    return hashlib.blake2b(f"{seed}:{page_id}".encode(), digest_size=16).digest()


def split_heldout(
    pages: Sequence[EligiblePage], share: float, min_pages: int, seed: int
) -> tuple[list[EligiblePage], list[EligiblePage]]:
    """(train, heldout): whole pages, :func:`heldout_count` of them held out, chosen by ``seed``
    alone; both lists keep the order of ``pages``.

    Too few pages (:func:`heldout_shortfall` > 0) raise :class:`NotEnoughPagesError`: a run with
    fewer held-out pages than the minimum could not be judged, so it must not start; the guard
    asks :func:`heldout_shortfall` first and tells the admin how many pages are missing.
    """
    if not 0 < share < 1:
        raise ValueError(f"the held-out share must lie between 0 and 1, not {share}")
    if min_pages < 1:
        raise ValueError(f"at least one page must be held out, not {min_pages}")
    if len({page.page_id for page in pages}) != len(pages):
        raise ValueError("a page is listed twice")
    missing = heldout_shortfall(pages, min_pages)
    if missing:
        raise NotEnoughPagesError(missing, min_pages)
    count = heldout_count(len(pages), share, min_pages)
    held = {page.page_id for page in sorted(pages, key=lambda page: _rank(seed, page.page_id))[:count]}
    return [p for p in pages if p.page_id not in held], [p for p in pages if p.page_id in held]


# --- the ZIP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PageRow:
    page_id: int
    number: int
    width: int
    height: int


def _page_xml(
    row: _PageRow, lines: Sequence[tuple[int, str, Any, Any]], image_name: str, now: str, *, need_text: bool
) -> tuple[bytes, int]:
    """PAGE XML (2019-07-15) of one page: one text region, its lines in reading order. A line
    without a baseline of two points or an outline of three (nothing to cut out) is left out,
    and with ``need_text`` (recognition) one whose text is blank once made XML-safe.
    Returns the document's bytes and the lines in it."""
    root = etree.Element(f"{{{PAGE_NS}}}PcGts", nsmap={None: PAGE_NS, "xsi": _XSI})
    root.set(f"{{{_XSI}}}schemaLocation", _SCHEMA_LOCATION)
    metadata = etree.SubElement(root, f"{{{PAGE_NS}}}Metadata")
    etree.SubElement(metadata, f"{{{PAGE_NS}}}Creator").text = "Familienarchiv backend"
    etree.SubElement(metadata, f"{{{PAGE_NS}}}Created").text = now
    etree.SubElement(metadata, f"{{{PAGE_NS}}}LastChange").text = now
    page = etree.SubElement(
        root,
        f"{{{PAGE_NS}}}Page",
        imageFilename=image_name,
        imageWidth=str(row.width),
        imageHeight=str(row.height),
    )
    region = etree.SubElement(page, f"{{{PAGE_NS}}}TextRegion", id="r1")
    corners = [(0, 0), (row.width - 1, 0), (row.width - 1, row.height - 1), (0, row.height - 1)]
    etree.SubElement(region, f"{{{PAGE_NS}}}Coords", points=joined(corners))
    written = 0
    for order_index, text, baseline, polygon in lines:
        # Whole pixels inside the page (kraken's polygons may reach past its edge); malformed: none.
        base = clamp_points(baseline, row.width, row.height)
        outline = clamp_points(polygon, row.width, row.height)
        unicode = clean_text(text)
        if len(base) < 2 or len(outline) < 3 or (need_text and not unicode.strip()):
            continue
        line = etree.SubElement(region, f"{{{PAGE_NS}}}TextLine", id=f"l{order_index}")
        etree.SubElement(line, f"{{{PAGE_NS}}}Coords", points=joined(outline))
        etree.SubElement(line, f"{{{PAGE_NS}}}Baseline", points=joined(base))
        equiv = etree.SubElement(line, f"{{{PAGE_NS}}}TextEquiv")
        etree.SubElement(equiv, f"{{{PAGE_NS}}}Unicode").text = unicode
        written += 1
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True), written


def _document_lines(
    session: Session, document_id: int, page_ids: Sequence[int], kind: TrainingKind
) -> dict[int, list[tuple[int, str, Any, Any]]]:
    """The lines of ``kind``'s data on those pages of the document, in reading order, by page."""
    rows = session.execute(
        select(Line.page_id, Line.order_index, Line.text, Line.ocr_text, Line.baseline, Line.polygon)
        .join(Page, Page.id == Line.page_id)
        .join(Document, Document.id == Page.document_id)
        .where(
            Page.document_id == document_id,
            Page.id.in_(page_ids),
            Document.deleted_at.is_(None),
            _lines_of(kind),
        )
        .order_by(Page.number, Line.order_index)
    )
    lines: dict[int, list[tuple[int, str, Any, Any]]] = {}
    for page_id, index, text, ocr_text, baseline, polygon in rows:
        lines.setdefault(page_id, []).append((index, text if text is not None else ocr_text, baseline, polygon))
    return lines


def _page_rows(
    session: Session, storage: Storage, limits: RenderLimits, document: Document, page_ids: Sequence[int]
) -> list[_PageRow]:
    pages = session.scalars(
        select(Page).where(Page.document_id == document.id, Page.id.in_(page_ids)).order_by(Page.number)
    ).all()
    if any(page.width is None or page.height is None for page in pages):
        # Lines stored before the OCR service reported a page's size: worked out as the page list does.
        record_sizes(session, storage, limits, document, pages)
    return [
        _PageRow(page.id, page.number, page.width, page.height)
        for page in pages
        if page.width is not None and page.height is not None
    ]


def write_training_zip(
    session: Session,
    storage: Storage,
    limits: RenderLimits,
    pages: Sequence[EligiblePage],
    kind: TrainingKind,
    dest: BinaryIO,
    *,
    renderers: PdfRenderers,
) -> ZipSummary:
    """Write ``pages`` as training data into ``dest`` (a seekable file) and say what went in.

    Per page ``p{page_id}.png`` (the upright page at exactly its recorded size: the pixels its
    lines' coordinates are in) and ``p{page_id}.xml`` (PAGE XML with ``kind``'s lines, as they
    are now: a document moved to the trash or a page whose review was cleared since the pages
    were chosen adds nothing). A page left without lines is left out, and so is one the
    backend's renderer refuses (too complex, damaged, too large: logged), not the whole ZIP. Entries are written one
    by one, each image rendered, written and released before the next; the session's reads are
    committed before each document's renders, so no transaction stays open for seconds.
    """
    page_count = line_count = 0
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    ordered = sorted(pages, key=lambda page: (page.document_id, page.page_number))
    with zipfile.ZipFile(dest, "w") as archive:
        for document_id, group in groupby(ordered, key=lambda page: page.document_id):
            page_ids = [page.page_id for page in group]
            document = session.get(Document, document_id, populate_existing=True)
            if document is None or document.deleted_at is not None:
                continue
            rows = _page_rows(session, storage, limits, document, page_ids)
            lines = _document_lines(session, document_id, page_ids, kind)
            media_type = document.media_type
            session.commit()
            with seekable_original(storage, document) as source:
                for row in rows:
                    name = f"p{row.page_id}"
                    xml, written = _page_xml(
                        row,
                        lines.get(row.page_id, []),
                        f"{name}.png",
                        now,
                        need_text=kind is not TrainingKind.SEGMENTATION,
                    )
                    if written == 0:
                        continue
                    try:
                        _write_image(archive, f"{name}.png", source, media_type, row, limits, renderers)
                    except AppError as exc:
                        if exc.code not in _UNDRAWABLE:
                            raise
                        # Left out, not the run: the page stays eligible, so it would fail every run.
                        log.warning("training ZIP: page %d left out, it cannot be drawn: %s", row.page_id, exc.message)
                        continue
                    archive.writestr(
                        _entry(f"{name}.xml", zipfile.ZIP_DEFLATED), xml, compress_type=zipfile.ZIP_DEFLATED
                    )
                    page_count += 1
                    line_count += written
    log.info("training ZIP (%s): %d pages, %d lines", kind.value, page_count, line_count)
    return ZipSummary(pages=page_count, lines=line_count)


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=datetime.now(UTC).timetuple()[:6])
    info.compress_type = compression
    info.external_attr = (stat.S_IFREG | 0o644) << 16  # a plain file (the OCR service checks the type)
    return info


def _write_image(
    archive: zipfile.ZipFile,
    name: str,
    source: BinaryIO,
    media_type: str,
    row: _PageRow,
    limits: RenderLimits,
    renderers: PdfRenderers,
) -> None:
    # PDF pages are drawn in the page renderers' children (time and memory limits), as for people.
    image = fitted(
        render_ocr_page(source, media_type, row.number, limits, renderers), (row.width, row.height), row.number
    )
    try:
        # PNG is already compressed: stored, not deflated again.
        with archive.open(_entry(name, zipfile.ZIP_STORED), "w") as entry:
            image.save(entry, "PNG", compress_level=_PNG_LEVEL)
    finally:
        image.close()
