"""Reading ALTO v2, v3 and v4 as kraken and eScriptorium write it.

A line's place: its ``Shape/Polygon`` (else its HPOS/VPOS box) and its BASELINE, either a
polyline ("x y x y", ALTO 4.2+) or one number (ALTO 2/3: the baseline's height, drawn across
the line's box); without one it is derived from the outline. Its text: the ``String`` CONTENTs
in order, a space for each ``SP`` (and between two Strings with none), a ``HYP``'s character.
Lines are read in the file's ReadingOrder (ElementRefs to lines or blocks, as kraken writes
it), else as written.

The title, writer and date: ``Tags/OtherTag``s whose ID and TYPE are ``title`` / ``writer`` /
``date`` (this archive's export writes them so).

Coordinates in ``mm10`` or ``inch1200`` need the page's size in the same unit (``Page``
WIDTH/HEIGHT): the import scales them to the page image, which converts them to pixels.
"""

from __future__ import annotations

from lxml import etree

from backend.transcripts.model import TranscriptLine
from backend.transcripts.page_xml import CREATOR
from backend.transcripts.reading import (
    ReadPage,
    box,
    invalid,
    line,
    number,
    numbers,
    one_line,
    page_size,
    partial_date,
    points,
)

NAMESPACES = frozenset(
    {
        "http://www.loc.gov/standards/alto/ns-v2#",
        "http://www.loc.gov/standards/alto/ns-v3#",
        "http://www.loc.gov/standards/alto/ns-v4#",
        # Old v2 files without the trailing '#'.
        "http://www.loc.gov/standards/alto/ns-v2",
    }
)
UNITS = frozenset({"pixel", "mm10", "inch1200"})


def is_alto(root: etree._Element) -> bool:
    name = etree.QName(root)
    return name.localname == "alto" and (name.namespace in NAMESPACES or name.namespace is None)


def _child_text(parent: etree._Element | None, path: str) -> str | None:
    if parent is None:
        return None
    found = parent.find(path)
    return found.text.strip() if found is not None and found.text else None


def _box(element: etree._Element, shown: str, what: str = "a TextLine") -> tuple[float, float, float, float] | None:
    values = [number(element.get(name), shown, f"{what}'s {name}") for name in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
    if any(v is None for v in values):
        return None
    x, y, w, h = (v or 0.0 for v in values)
    return x, y, w, h


def _frame(element: etree._Element, q: str, shown: str) -> tuple[float, float, float, float] | None:
    """The TextLine's box: its own, else (none, or one without area, as some converters write)
    the box around its Strings' (all four attributes are optional in ALTO; eScriptorium places
    such a line by its words too). Boxes without area are no place."""
    own = _box(element, shown)
    if own is not None and own[2] > 0 and own[3] > 0:
        return own
    words = [
        b for s in element.iterfind(f"{q}String") if (b := _box(s, shown, "a String")) is not None and b[2] > 0 < b[3]
    ]
    if not words:
        return own
    left, top = min(x for x, _, _, _ in words), min(y for _, y, _, _ in words)
    right, bottom = max(x + w for x, _, w, _ in words), max(y + h for _, y, _, h in words)
    return left, top, right - left, bottom - top


def _text(element: etree._Element, q: str) -> tuple[str, str | None]:
    """The line's text and, where its words carry one marked as the OCR's, the OCR's reading.

    As kraken reads it: the Strings' CONTENT in order, a space for each SP (Strings with no SP
    between them are parts of one word), a HYP's character at the end.
    """
    parts: list[str] = []
    ocr_parts: list[str] = []
    has_alternative = False
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if name == "SP":
            parts.append(" ")
            ocr_parts.append(" ")
        elif name in ("String", "HYP"):
            content = child.get("CONTENT") or ""
            alternative = _ocr_alternative(child, q)
            has_alternative = has_alternative or alternative is not None
            parts.append(content)
            ocr_parts.append(alternative if alternative is not None else content)
    return "".join(parts), ("".join(ocr_parts) if has_alternative else None)


def _ours(description: etree._Element | None, q: str) -> bool:
    """Did this archive write the file? (Its export names itself as the processing software.)"""
    software = _child_text(description, f"{q}Processing/{q}processingSoftware/{q}softwareName")
    return software == CREATOR


def _ocr_alternative(string: etree._Element, q: str) -> str | None:
    for alternative in string.findall(f"{q}ALTERNATIVE"):
        if "ocr" in (alternative.get("PURPOSE") or "").casefold():
            return alternative.text or ""
    return None


def _baseline(
    raw: str | None, frame: tuple[float, float, float, float] | None, shown: str
) -> tuple[tuple[float, float], ...]:
    if raw is None or not raw.strip():
        return ()
    values = numbers(raw, shown, "a TextLine's BASELINE")
    if len(values) == 1:
        if frame is None:
            return ()
        x, _, w, _ = frame
        return ((x, values[0]), (x + w, values[0]))
    return points(raw, shown, "a TextLine's BASELINE")


def _reading_order(root: etree._Element, q: str) -> dict[str, int]:
    """Each id's place in the file's ReadingOrder (kraken writes one of its lines), if any."""
    places: dict[str, int] = {}
    for ref in root.iterfind(f"{q}ReadingOrder//{q}ElementRef"):
        places.setdefault(ref.get("REF") or "", len(places))
    return places


def _lines(layout: etree._Element, q: str, shown: str, height: float, order: dict[str, int]) -> list[TranscriptLine]:
    placed: list[tuple[float, int, TranscriptLine]] = []
    for position, element in enumerate(layout.iter(f"{q}TextLine")):
        frame = _frame(element, q, shown)
        polygon_element = element.find(f"{q}Shape/{q}Polygon")
        polygon = points(polygon_element.get("POINTS"), shown, "a Polygon") if polygon_element is not None else ()
        if len(polygon) < 3 and frame is not None and frame[2] > 0 and frame[3] > 0:
            polygon = box(*frame)
        text, ocr_text = _text(element, q)
        which = f"the TextLine {(element.get('ID') or '')[:80]!r}"
        made = line(_baseline(element.get("BASELINE"), frame, shown), polygon, text, ocr_text, height, (shown, which))
        if made is None:
            continue
        block = element.getparent()
        place = order.get(element.get("ID") or "")
        if place is None and block is not None:
            place = order.get(block.get("ID") or "")
        placed.append((float("inf") if place is None else place, position, made))
    return [made for _, _, made in sorted(placed, key=lambda item: (item[0], item[1]))]


def read_alto(root: etree._Element, shown: str) -> ReadPage:
    ns = etree.QName(root).namespace or ""
    q = f"{{{ns}}}" if ns else ""
    description = root.find(f"{q}Description")
    unit = _child_text(description, f"{q}MeasurementUnit") or "pixel"
    if unit not in UNITS:
        raise invalid(shown, f"the MeasurementUnit {unit[:40]!r} is not pixel, mm10 or inch1200.")
    image_name = _child_text(description, f"{q}sourceImageInformation/{q}fileName") or ""
    pages = root.findall(f"{q}Layout/{q}Page")
    if len(pages) != 1:
        raise invalid(shown, f"an ALTO file of one page image must hold one Page; it holds {len(pages)}.")
    page = pages[0]
    width = page_size(page.get("WIDTH"), shown, "the Page's WIDTH")
    height = page_size(page.get("HEIGHT"), shown, "the Page's HEIGHT")
    if unit != "pixel" and not (width and height):
        raise invalid(shown, f"coordinates in {unit} need the Page's WIDTH and HEIGHT in {unit} to place them.")
    tags = {
        tag.get("TYPE"): tag.get("LABEL")
        for tag in root.iterfind(f"{q}Tags/{q}OtherTag")
        if tag.get("ID") == tag.get("TYPE")
    }
    day, precision = partial_date(tags.get("date"))
    return ReadPage(
        image_name=image_name,
        width=width,
        height=height,
        lines=tuple(_lines(page, q, shown, height, _reading_order(root, q))),
        # The title only from this archive's own files (as in PAGE): another tool's "title" tag may name anything.
        title=one_line(tags.get("title"), 500) if _ours(description, q) else None,
        writer=one_line(tags.get("writer"), 200),
        date=day,
        date_precision=precision,
    )
