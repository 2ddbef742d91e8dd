"""Import ZIPs in the shapes Transkribus, eScriptorium and kraken write, built from generated pages.

Shapes follow those tools' exports: Transkribus' PAGE (2013-07-15 or 2019-07-15 namespace,
``custom="readingOrder {index:n;}"`` on regions and lines, a ReadingOrder of RegionRefIndexed,
``TextEquiv/Unicode``, XML in ``page/`` beside the images), kraken's ALTO template (v4:
BASELINE polyline "x y x y", ``Shape/Polygon``, words as String with SP between them, a
ReadingOrder of ElementRefs) and eScriptorium's (v4, one String per line); ALTO v2/v3 with a
BASELINE that is a height and HPOS/VPOS boxes only. The regions and lines are written out of
order where the tool's reading order says otherwise, so a reader that ignores it fails.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from PIL import Image

PAGE_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO = {
    2: "http://www.loc.gov/standards/alto/ns-v2#",
    3: "http://www.loc.gov/standards/alto/ns-v3#",
    4: "http://www.loc.gov/standards/alto/ns-v4#",
}
# Letters an archive's transcriptions hold: long s, r rotunda, combining marks, right-to-left.
ODD_WORDS = ["Weihnachten", "Grüße", "ſchön", "deꝛ", "e\u0301te", "שלום", "Straße", "Mutter"]

Point = tuple[int, int]


@dataclass(frozen=True)
class GenLine:
    baseline: tuple[Point, ...]
    polygon: tuple[Point, ...]
    text: str


@dataclass(frozen=True)
class GenPage:
    image_name: str
    width: int
    height: int
    lines: tuple[GenLine, ...]
    seed: int


def gen_page(seed: int, name: str, lines: int = 4, width: int = 600, height: int = 400) -> GenPage:
    rng = random.Random(seed)
    made = []
    for index in range(lines):
        top = 30 + index * (height - 60) // max(lines, 1)
        x0, x1 = rng.randint(20, 60), rng.randint(width - 80, width - 20)
        base = top + 30
        slope = rng.randint(-4, 4)
        baseline = ((x0, base), ((x0 + x1) // 2, base + slope // 2), (x1, base + slope))
        polygon = ((x0, top), (x1, top + slope), (x1, base + slope + 8), (x0, base + 8))
        text = " ".join(rng.choice(ODD_WORDS) for _ in range(rng.randint(1, 4)))
        made.append(GenLine(baseline, polygon, text))
    return GenPage(name, width, height, tuple(made), seed)


def image_bytes(page: GenPage, fmt: str = "PNG", size: tuple[int, int] | None = None) -> bytes:
    """A page image unique to the page's seed (no two imports collide as duplicates)."""
    image = Image.new("RGB", size or (page.width, page.height), (255, 255, 250 - page.seed % 200))
    image.putpixel((page.seed % image.width, 1), (page.seed % 256, 0, 0))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _page_points(points: Sequence[Point]) -> str:
    return " ".join(f"{x},{y}" for x, y in points)


def _alto_points(points: Sequence[Point]) -> str:
    return " ".join(f"{x} {y}" for x, y in points)


def _box(points: Sequence[Point]) -> tuple[int, int, int, int]:
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def transkribus_page(
    page: GenPage,
    namespace: str = PAGE_2013,
    *,
    image_name: str | None = None,
    declared: tuple[int, int] | None = None,
    baselines: bool = True,
    empty_region: bool = True,
) -> bytes:
    """PAGE as Transkribus exports it: two regions written in reverse of their reading order,
    the lines of each also reversed, every order given by ``custom`` and the ReadingOrder."""
    width, height = declared or (page.width, page.height)
    half = (len(page.lines) + 1) // 2
    groups = [page.lines[:half], page.lines[half:]]
    regions = []
    for r, group in reversed(list(enumerate(groups))):
        lines = []
        for i, line in reversed(list(enumerate(group))):
            baseline = f'\n        <Baseline points="{_page_points(line.baseline)}"/>' if baselines else ""
            text = f"<TextEquiv><Unicode>{_xml(line.text)}</Unicode></TextEquiv>" if line.text else ""
            lines.append(
                f'      <TextLine id="r{r}l{i}" custom="readingOrder {{index:{i};}}">\n'
                f'        <Coords points="{_page_points(line.polygon)}"/>{baseline}\n'
                f"        {text}\n      </TextLine>"
            )
        regions.append(
            f'    <TextRegion orientation="0.0" id="r{r}" custom="readingOrder {{index:{r};}}">\n'
            f'      <Coords points="0,0 {width},0 {width},{height} 0,{height}"/>\n' + "\n".join(lines) + "\n"
            "      <TextEquiv><Unicode></Unicode></TextEquiv>\n    </TextRegion>"
        )
    if empty_region:
        regions.append(
            '    <TextRegion id="r9" custom="readingOrder {index:9;}"><Coords points="1,1 2,1 2,2"/></TextRegion>'
        )
    refs = "".join(f'<RegionRefIndexed index="{r}" regionRef="r{r}"/>' for r in range(len(groups)))
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<PcGts xmlns="{namespace}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <Metadata><Creator>prov=University of Rostock/CITlab:v=2.6.6\nTranskribus</Creator>"
        "<Created>2021-09-23T12:35:22.487+02:00</Created><LastChange>2021-09-23T12:35:22.487+02:00</LastChange>"
        '<TranskribusMetadata docId="1" pageId="2" pageNr="1" status="GT"/></Metadata>\n'
        f"  <Page imageFilename={quoteattr(image_name or page.image_name)} "
        f'imageWidth="{width}" imageHeight="{height}">\n'
        f'    <ReadingOrder><OrderedGroup id="ro_1" caption="Regions reading order">{refs}'
        "</OrderedGroup></ReadingOrder>\n" + "\n".join(regions) + "\n  </Page>\n</PcGts>\n"
    ).encode()


def kraken_alto(
    page: GenPage, version: int = 4, *, image_name: str | None = None, unit: str = "pixel", factor: float = 1.0
) -> bytes:
    """ALTO as kraken's template writes it (v4), or v2/v3 as older tools do (BASELINE a height,
    boxes only). ``factor``: coordinates multiplied (mm10 and inch1200 files)."""
    ns = ALTO[version]

    def scaled(points: Sequence[Point]) -> list[Point]:
        return [(round(x * factor), round(y * factor)) for x, y in points]

    lines = []
    for i, line in enumerate(page.lines):
        polygon = scaled(line.polygon)
        x, y, w, h = _box(polygon)
        words = line.text.split(" ")
        strings = "<SP/>".join(
            f'<String CONTENT={quoteattr(word)} HPOS="{x}" VPOS="{y}" WIDTH="1" HEIGHT="1"/>' for word in words
        )
        if version == 4:
            attrs = f'BASELINE="{_alto_points(scaled(line.baseline))}"'
            shape = f'<Shape><Polygon POINTS="{_alto_points(polygon)}"/></Shape>'
        else:
            attrs = f'BASELINE="{scaled(line.baseline)[0][1]}"'
            shape = ""
        lines.append(
            f'<TextLine ID="line_{i}" HPOS="{x}" VPOS="{y}" WIDTH="{w}" HEIGHT="{h}" {attrs}>'
            f"{shape}{strings}</TextLine>"
        )
    # kraken's ReadingOrder names the lines; they are written in it here, the order test reverses blocks.
    order = "".join(f'<ElementRef ID="o_{i}" REF="line_{i}"/>' for i in range(len(page.lines)))
    reading = f'<ReadingOrder><OrderedGroup ID="ro_0">{order}</OrderedGroup></ReadingOrder>' if version == 4 else ""
    width, height = round(page.width * factor), round(page.height * factor)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alto xmlns="{ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<Description><MeasurementUnit>{unit}</MeasurementUnit><sourceImageInformation>"
        f"<fileName>{_xml(image_name or page.image_name)}</fileName></sourceImageInformation>"
        '<Processing ID="OCR_0"><processingCategory>other</processingCategory>'
        "<processingSoftware><softwareName>kraken</softwareName></processingSoftware></Processing></Description>"
        f'<Tags><OtherTag DESCRIPTION="" ID="TYPE_1" TYPE="default" LABEL="default"/></Tags>{reading}'
        f'<Layout><Page WIDTH="{width}" HEIGHT="{height}" PHYSICAL_IMG_NR="0" ID="page_0">'
        f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}">'
        f'<TextBlock ID="textblock_0">{"".join(lines)}</TextBlock>'
        "</PrintSpace></Page></Layout></alto>\n"
    ).encode()


def escriptorium_alto(page: GenPage) -> bytes:
    """ALTO v4 as eScriptorium exports it: one String per line holding its whole text."""
    ns = ALTO[4]
    lines = []
    for i, line in enumerate(page.lines):
        x, y, w, h = _box(line.polygon)
        lines.append(
            f'<TextLine ID="eSc_line_{i}" TAGREFS="LT1" BASELINE="{_alto_points(line.baseline)}" '
            f'HPOS="{x}" VPOS="{y}" WIDTH="{w}" HEIGHT="{h}"><Shape><Polygon POINTS="{_alto_points(line.polygon)}"/>'
            f"</Shape><String CONTENT={quoteattr(line.text)} "
            f'HPOS="{x}" VPOS="{y}" WIDTH="{w}" HEIGHT="{h}"/></TextLine>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alto xmlns="{ns}" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<Description><MeasurementUnit>pixel</MeasurementUnit><sourceImageInformation>"
        f"<fileName>{_xml(page.image_name)}</fileName></sourceImageInformation></Description>"
        '<Tags><OtherTag ID="LT1" LABEL="default" DESCRIPTION="line type default"/></Tags>'
        f'<Layout><Page WIDTH="{page.width}" HEIGHT="{page.height}" PHYSICAL_IMG_NR="1" ID="eSc_dummypage_">'
        f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{page.width}" HEIGHT="{page.height}">'
        f'<TextBlock ID="eSc_dummyblock_">{"".join(lines)}</TextBlock></PrintSpace></Page></Layout></alto>\n'
    ).encode()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def transkribus_zip(pages: Sequence[GenPage], folder: str = "Brief an Anna", namespace: str = PAGE_2013) -> bytes:
    """Transkribus' export layout: ``<doc>/<image>`` and ``<doc>/page/<stem>.xml``, with mets.xml."""
    files = {f"{folder}/mets.xml": b'<?xml version="1.0"?><mets xmlns="http://www.loc.gov/METS/"/>'}
    for page in pages:
        stem = page.image_name.rsplit(".", 1)[0]
        files[f"{folder}/{page.image_name}"] = image_bytes(page, "JPEG" if page.image_name.endswith(".jpg") else "PNG")
        files[f"{folder}/page/{stem}.xml"] = transkribus_page(page, namespace)
    return zip_of(files)


def transkribus_midnight_ms(day: date, utc_offset_hours: int = 1) -> int:
    """Milliseconds since 1970 of ``day``'s midnight in a zone ``utc_offset_hours`` east of UTC
    (how Transkribus keeps a day; before 1970 the number is negative)."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=utc_offset_hours)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def transkribus_metadata(**fields: object) -> bytes:
    """Transkribus' metadata.xml (``trpDocMetadata``, JAXB's field names), with a docId and these fields."""
    inner = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in {"docId": 4711, **fields}.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<trpDocMetadata>{inner}</trpDocMetadata>\n'.encode()
    )


def transkribus_mets(pages: Sequence[GenPage], metadata: bytes | None = None) -> bytes:
    """Transkribus' mets.xml: a fileSec of images and PAGE files, a PHYSICAL structMap in ``pages``' order.
    The divs are written in reverse, their ORDER attributes say the order. ``metadata`` (a
    ``transkribus_metadata``) is embedded in a dmdSec, in the METS namespace, as Transkribus does."""
    images, xmls, divs = [], [], []
    for n, page in enumerate(pages, start=1):
        stem = page.image_name.rsplit(".", 1)[0]
        images.append(
            f'<file ID="IMAGE_{n}" MIMETYPE="image/png"><FLocat LOCTYPE="OTHER" OTHERLOCTYPE="FILE" '
            f'xlink:href="{page.image_name}"/></file>'
        )
        xmls.append(
            f'<file ID="PAGEXML_{n}" MIMETYPE="application/xml"><FLocat LOCTYPE="OTHER" OTHERLOCTYPE="FILE" '
            f'xlink:href="page/{stem}.xml"/></file>'
        )
        divs.append(
            f'<div ID="PAGE_{n}" ORDER="{n}" TYPE="page"><fptr ID="IMG_{n}"><area FILEID="IMAGE_{n}"/></fptr>'
            f'<fptr ID="XML_{n}"><area FILEID="PAGEXML_{n}"/></fptr></div>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<mets xmlns="http://www.loc.gov/METS/" xmlns:xlink="http://www.w3.org/1999/xlink">'
        + (
            '<dmdSec ID="MD_ORIG"><mdWrap MDTYPE="OTHER"><xmlData>'
            + metadata.decode().split("?>", 1)[-1].strip()
            + "</xmlData></mdWrap></dmdSec>"
            if metadata is not None
            else ""
        )
        + '<fileSec><fileGrp ID="MASTER"><fileGrp ID="IMG">'
        + "".join(images)
        + "</fileGrp>"
        '<fileGrp ID="PAGEXML">' + "".join(xmls) + "</fileGrp></fileGrp></fileSec>"
        '<structMap ID="TRANSKRIBUS_STRUCTMAP_1" TYPE="PHYSICAL"><div ID="PHYSICAL_1" TYPE="physSequence">'
        + "".join(reversed(divs))
        + "</div></structMap></mets>\n"
    ).encode()
