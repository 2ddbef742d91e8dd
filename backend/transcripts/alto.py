"""ALTO 4.3 of one transcribed page, in the shape eScriptorium exports it.

Pixels as the unit; the page image's file name in ``sourceImageInformation``; one TextBlock
holding every line in reading order; each TextLine with its box, ``BASELINE`` as ALTO 4.2+
writes a polyline (``x1 y1 x2 y2``, as kraken and eScriptorium write it: eScriptorium reads no
other form), its polygon as ``Shape/Polygon`` (the same form) and the whole line as one
``String`` (eScriptorium's export does the same: the line's text, spaces and all, travels
unsplit). Where a person changed the OCR's reading the line is marked ``CS="true"`` and the
OCR's text is the String's ``ALTERNATIVE`` (purpose ``ocr``). The title, writer and date are
``Tags/OtherTag``s (ALTO's Description holds no free metadata).
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from backend.documents.schemas import format_partial_date
from backend.transcripts.geometry import Point, baseline, bounding_box, flat, outline
from backend.transcripts.model import TranscriptDocument, TranscriptLine, TranscriptPage
from backend.transcripts.page_xml import CREATOR, XSI_NS, confidence, timestamp
from backend.transcripts.text import clean_text

ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
XLINK_NS = "http://www.w3.org/1999/xlink"
_SCHEMA_LOCATION = f"{ALTO_NS} http://www.loc.gov/standards/alto/v4/alto-4-3.xsd"


def _tag(name: str) -> str:
    return f"{{{ALTO_NS}}}{name}"


def alto_xml(doc: TranscriptDocument, page: TranscriptPage, *, now: datetime | None = None) -> bytes:
    """The page as an ALTO 4.3 document (UTF-8 bytes with the XML declaration)."""
    root = etree.Element(_tag("alto"), nsmap={None: ALTO_NS, "xlink": XLINK_NS, "xsi": XSI_NS})
    root.set(f"{{{XSI_NS}}}schemaLocation", _SCHEMA_LOCATION)
    root.set("SCHEMAVERSION", "4.3")
    _description(root, page, timestamp(now))
    _tags(root, doc)
    layout = etree.SubElement(root, _tag("Layout"))
    element = etree.SubElement(
        layout,
        _tag("Page"),
        ID=f"page_{page.number}",
        WIDTH=str(page.width),
        HEIGHT=str(page.height),
        PHYSICAL_IMG_NR=str(page.number),
    )
    space = etree.SubElement(
        element, _tag("PrintSpace"), HPOS="0", VPOS="0", WIDTH=str(page.width), HEIGHT=str(page.height)
    )
    if page.lines:
        _block(space, page)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _description(root: etree._Element, page: TranscriptPage, now: str) -> None:
    description = etree.SubElement(root, _tag("Description"))
    etree.SubElement(description, _tag("MeasurementUnit")).text = "pixel"
    source = etree.SubElement(description, _tag("sourceImageInformation"))
    etree.SubElement(source, _tag("fileName")).text = page.image_name
    processing = etree.SubElement(description, _tag("Processing"), ID="export")
    etree.SubElement(processing, _tag("processingDateTime")).text = now
    software = etree.SubElement(processing, _tag("processingSoftware"))
    etree.SubElement(software, _tag("softwareName")).text = CREATOR


def _tags(root: etree._Element, doc: TranscriptDocument) -> None:
    written = format_partial_date(doc.date, doc.date_precision)
    values = [
        ("title", clean_text(doc.title)),
        ("writer", clean_text(doc.writer) if doc.writer else None),
        ("date", written),
    ]
    present = [(name, value) for name, value in values if value]
    if not present:
        return
    tags = etree.SubElement(root, _tag("Tags"))
    for name, value in present:
        etree.SubElement(tags, _tag("OtherTag"), ID=name, TYPE=name, LABEL=value)


def _box(points: tuple[Point, ...]) -> dict[str, str]:
    box = bounding_box(points)
    assert box is not None  # outlines always have points
    x0, y0, x1, y1 = box
    return {"HPOS": str(x0), "VPOS": str(y0), "WIDTH": str(x1 - x0), "HEIGHT": str(y1 - y0)}


def _block(space: etree._Element, page: TranscriptPage) -> None:
    outlines = [outline(line, page.width, page.height) for line in page.lines]
    every = tuple(point for points in outlines for point in points)
    block = etree.SubElement(space, _tag("TextBlock"), ID=f"p{page.number}_b1", **_box(every))
    for index, (line, points) in enumerate(zip(page.lines, outlines, strict=True)):
        _line(block, line, points, f"p{page.number}_l{index + 1}", page)


def _line(
    block: etree._Element, line: TranscriptLine, points: tuple[Point, ...], line_id: str, page: TranscriptPage
) -> None:
    box = _box(points)
    element = etree.SubElement(
        block, _tag("TextLine"), ID=line_id, BASELINE=flat(baseline(line, page.width, page.height)), **box
    )
    if line.ocr_text is not None:
        element.set("CS", "true")
    etree.SubElement(etree.SubElement(element, _tag("Shape")), _tag("Polygon"), POINTS=flat(points))
    string = etree.SubElement(element, _tag("String"), ID=f"{line_id}_s1", CONTENT=clean_text(line.text), **box)
    if line.ocr_text is None:
        if (written := confidence(line.confidence)) is not None:
            string.set("WC", written)
    else:
        etree.SubElement(string, _tag("ALTERNATIVE"), PURPOSE="ocr").text = clean_text(line.ocr_text)
