"""PAGE XML (2019-07-15 schema) of one transcribed page, in the shape Transkribus writes.

One text region per page holding every line (the archive keeps no regions), its outline the
box around the lines; a ReadingOrder naming it; each line with Transkribus's
``custom="readingOrder {index:n;}"``, its polygon, baseline and text. The current text is the
line's one ``TextEquiv`` (``index="0"``). Where a person changed the OCR's reading, the OCR's
text and confidence are kept as the line's ``UserDefined/UserAttribute``s ``ocrText`` and
``ocrConfidence``, not as a second TextEquiv: eScriptorium joins every TextEquiv of a line into
its text (the correction and the OCR's reading one after the other), and PAGE 2013, which
Transkribus reads, allows one. The writer and date travel as ``MetadataItem``s, the only
per-item metadata the schema has.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from lxml import etree

from backend.documents.schemas import format_partial_date
from backend.transcripts.geometry import baseline, bounding_box, box_corners, joined, outline
from backend.transcripts.model import TranscriptDocument, TranscriptLine, TranscriptPage
from backend.transcripts.text import clean_text

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_SCHEMA_LOCATION = f"{PAGE_NS} {PAGE_NS}/pagecontent.xsd"
CREATOR = "Familienarchiv OCR"
# The line's UserAttributes that hold the OCR's reading of a corrected line (read back by
# backend/transcripts/page_reader.py).
OCR_TEXT = "ocrText"
OCR_CONFIDENCE = "ocrConfidence"


def _tag(name: str) -> str:
    return f"{{{PAGE_NS}}}{name}"


def confidence(value: float | None) -> str | None:
    """A confidence as PAGE's ``conf`` and ALTO's ``WC`` take it (0-1), or None where there is none."""
    if value is None or not math.isfinite(value):
        return None
    return f"{min(max(value, 0.0), 1.0):.4f}"


def timestamp(now: datetime | None) -> str:
    """UTC, whole seconds (both schemas want an xsd:dateTime; PAGE asks for UTC)."""
    return (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def page_xml(doc: TranscriptDocument, page: TranscriptPage, *, now: datetime | None = None) -> bytes:
    """The page as a PAGE XML document (UTF-8 bytes with the XML declaration)."""
    root = etree.Element(_tag("PcGts"), nsmap={None: PAGE_NS, "xsi": XSI_NS})
    root.set(f"{{{XSI_NS}}}schemaLocation", _SCHEMA_LOCATION)
    _metadata(root, doc, timestamp(now))
    element = etree.SubElement(
        root,
        _tag("Page"),
        imageFilename=page.image_name,
        imageWidth=str(page.width),
        imageHeight=str(page.height),
    )
    if page.lines:
        _region(element, page)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _metadata(root: etree._Element, doc: TranscriptDocument, now: str) -> None:
    metadata = etree.SubElement(root, _tag("Metadata"))
    etree.SubElement(metadata, _tag("Creator")).text = CREATOR
    etree.SubElement(metadata, _tag("Created")).text = now
    etree.SubElement(metadata, _tag("LastChange")).text = now
    etree.SubElement(metadata, _tag("Comments")).text = clean_text(doc.title)
    if doc.writer:
        etree.SubElement(metadata, _tag("MetadataItem"), type="author", name="writer", value=clean_text(doc.writer))
    written = format_partial_date(doc.date, doc.date_precision)
    if written:
        etree.SubElement(metadata, _tag("MetadataItem"), type="other", name="date", value=written)


def _region(element: etree._Element, page: TranscriptPage) -> None:
    outlines = [outline(line, page.width, page.height) for line in page.lines]
    order = etree.SubElement(etree.SubElement(element, _tag("ReadingOrder")), _tag("OrderedGroup"), id="ro_1")
    etree.SubElement(order, _tag("RegionRefIndexed"), index="0", regionRef="r1")
    region = etree.SubElement(element, _tag("TextRegion"), id="r1", custom="readingOrder {index:0;}")
    box = bounding_box(point for points in outlines for point in points)
    assert box is not None  # every outline has points
    etree.SubElement(region, _tag("Coords"), points=joined(box_corners(box)))
    for index, (line, points) in enumerate(zip(page.lines, outlines, strict=True)):
        _line(region, line, points, index, page)


def _line(
    region: etree._Element, line: TranscriptLine, points: tuple[tuple[int, int], ...], index: int, page: TranscriptPage
) -> None:
    element = etree.SubElement(
        region, _tag("TextLine"), id=f"r1l{index + 1}", custom=f"readingOrder {{index:{index};}}"
    )
    etree.SubElement(element, _tag("Coords"), points=joined(points))
    etree.SubElement(element, _tag("Baseline"), points=joined(baseline(line, page.width, page.height)))
    corrected = line.ocr_text is not None
    _equiv(element, line.text, 0, None if corrected else line.confidence)
    if line.ocr_text is not None:
        # After TextEquiv, as the schema orders a TextLine's children.
        kept = etree.SubElement(element, _tag("UserDefined"))
        etree.SubElement(
            kept,
            _tag("UserAttribute"),
            name=OCR_TEXT,
            description="the OCR's reading before a person corrected the line",
            type="xsd:string",
            value=clean_text(line.ocr_text),
        )
        if (written := confidence(line.confidence)) is not None:
            etree.SubElement(kept, _tag("UserAttribute"), name=OCR_CONFIDENCE, type="xsd:float", value=written)


def _equiv(line: etree._Element, text: str, index: int, conf: float | None) -> None:
    equiv = etree.SubElement(line, _tag("TextEquiv"), index=str(index))
    if (written := confidence(conf)) is not None:
        equiv.set("conf", written)
    etree.SubElement(equiv, _tag("Unicode")).text = clean_text(text)
