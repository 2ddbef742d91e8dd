"""Reading PAGE XML (the 2013-07-15 and 2019-07-15 schemas) as Transkribus and others write it.

Reading order: the page's ReadingOrder (RegionRefIndexed by index, nested groups in place),
else Transkribus' ``custom="readingOrder {index:n;}"`` on the regions, else document order;
the lines of a region by their own ``readingOrder`` custom attribute, else document order.
Regions of every kind that hold TextLines are read (table cells included). The writer and date
are read from ``MetadataItem``s named ``writer`` and ``date``, as this archive's export writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree

from backend.transcripts.model import TranscriptLine
from backend.transcripts.page_xml import OCR_TEXT
from backend.transcripts.reading import (
    ReadPage,
    invalid,
    line,
    one_line,
    page_size,
    partial_date,
    points,
)

NAMESPACES = frozenset(
    {
        "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15",
        "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15",
        # Some tools (kraken's older template among them) write the namespaces with https.
        "https://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15",
        "https://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15",
    }
)
# The Creator this archive's export writes (backend/transcripts/page_xml.py): its files carry the
# document's title, and the OCR's reading of a corrected line (a UserAttribute; in exports before
# 2026-11-27, the second TextEquiv).
CREATOR = "Familienarchiv OCR"
_INDEX = re.compile(r"readingOrder\s*\{[^}]*?index\s*:\s*(\d+)")


def is_page(root: etree._Element) -> bool:
    return etree.QName(root).namespace in NAMESPACES and etree.QName(root).localname == "PcGts"


def _custom_index(element: etree._Element) -> int | None:
    found = _INDEX.search(element.get("custom") or "")
    return int(found.group(1)) if found else None


def _in_order(elements: list[etree._Element], key_of: dict[str, int] | None = None) -> list[etree._Element]:
    """By the reading order given (``key_of`` by id, else the custom attribute), else as written."""

    def key(pair: tuple[int, etree._Element]) -> tuple[float, int]:
        position, element = pair
        index = key_of.get(element.get("id") or "") if key_of is not None else _custom_index(element)
        return (float("inf") if index is None else index, position)

    return [element for _, element in sorted(enumerate(elements), key=key)]


def _region_order(page: etree._Element, ns: str) -> dict[str, int] | None:
    """Each region id's place in the page's ReadingOrder, or None if the page has none."""
    order = page.find(f"{{{ns}}}ReadingOrder")
    if order is None:
        return None
    places: dict[str, int] = {}

    def walk(group: etree._Element) -> None:
        children = [c for c in group if isinstance(c.tag, str)]
        indexed = [c for c in children if c.get("index") is not None]
        if len(indexed) == len(children):
            children.sort(key=lambda c: int(c.get("index") or 0) if (c.get("index") or "").isdigit() else 0)
        for child in children:
            name = etree.QName(child).localname
            if name.startswith("RegionRef"):
                places.setdefault(child.get("regionRef") or "", len(places))
            elif name.startswith(("OrderedGroup", "UnorderedGroup")):
                ref = child.get("regionRef")
                if ref:
                    places.setdefault(ref, len(places))
                walk(child)

    walk(order)
    return places or None


def _text(element: etree._Element, ns: str, ours: bool) -> tuple[str, str | None]:
    """The line's text (the TextEquiv with the lowest index: the schema's main reading) and, in
    a file this archive exported, the OCR's reading it kept: the line's UserAttribute ``ocrText``
    (earlier exports: the next TextEquiv, index 1)."""
    kept = element.find(f"{{{ns}}}UserDefined/{{{ns}}}UserAttribute[@name='{OCR_TEXT}']") if ours else None
    equivs = element.findall(f"{{{ns}}}TextEquiv")
    if not equivs:
        words = [_text(word, ns, False)[0] for word in element.findall(f"{{{ns}}}Word")]
        return " ".join(w for w in words if w), None

    def rank(pair: tuple[int, etree._Element]) -> tuple[int, int]:
        raw = pair[1].get("index") or ""
        return (int(raw) if raw.lstrip("-").isdigit() else -1, pair[0])

    def unicode_of(equiv: etree._Element) -> str:
        found = equiv.find(f"{{{ns}}}Unicode")
        return (found.text or "") if found is not None else ""

    ranked = [equiv for _, equiv in sorted(enumerate(equivs), key=rank)]
    if kept is not None:
        return unicode_of(ranked[0]), kept.get("value") or ""
    ocr = unicode_of(ranked[1]) if ours and len(ranked) > 1 else None
    return unicode_of(ranked[0]), ocr


def _metadata(root: etree._Element, ns: str) -> tuple[bool, dict[str, str]]:
    """Whether this archive wrote the file, and its MetadataItems by name (writer, date)."""
    metadata = root.find(f"{{{ns}}}Metadata")
    if metadata is None:
        return False, {}
    creator = (metadata.findtext(f"{{{ns}}}Creator") or "").strip()
    items = {item.get("name") or "": item.get("value") or "" for item in metadata.findall(f"{{{ns}}}MetadataItem")}
    return creator == CREATOR, items


def _lines(region: etree._Element, ns: str, shown: str, height: float, ours: bool) -> Iterable[TranscriptLine]:
    for element in _in_order(region.findall(f"{{{ns}}}TextLine")):
        coords = element.find(f"{{{ns}}}Coords")
        baseline = element.find(f"{{{ns}}}Baseline")
        text, ocr_text = _text(element, ns, ours)
        made = line(
            points(baseline.get("points") if baseline is not None else None, shown, "a Baseline"),
            points(coords.get("points") if coords is not None else None, shown, "a TextLine's Coords"),
            text,
            ocr_text,
            height,
            (shown, f"the TextLine {(element.get('id') or '')[:80]!r}"),
        )
        if made is not None:
            yield made


def read_page(root: etree._Element, shown: str) -> ReadPage:
    ns = etree.QName(root).namespace or ""
    page = root.find(f"{{{ns}}}Page")
    if page is None:
        raise invalid(shown, "the PAGE file has no Page element.")
    width = page_size(page.get("imageWidth"), shown, "imageWidth")
    height = page_size(page.get("imageHeight"), shown, "imageHeight")
    # Every element holding TextLines is a text region, wherever it is (table cells nest them).
    regions = [r for r in page.iter(f"{{{ns}}}TextRegion") if r.find(f"{{{ns}}}TextLine") is not None]
    order = _region_order(page, ns)
    ours, items = _metadata(root, ns)
    lines: list[TranscriptLine] = []
    for region in _in_order(regions, order):
        lines.extend(_lines(region, ns, shown, height, ours))
    day, precision = partial_date(items.get("date"))
    comments = root.findtext(f"{{{ns}}}Metadata/{{{ns}}}Comments") if ours else None
    return ReadPage(
        image_name=page.get("imageFilename") or "",
        width=width,
        height=height,
        lines=tuple(lines),
        title=one_line(comments, 500),
        writer=one_line(items.get("writer"), 200),
        date=day,
        date_precision=precision,
    )
