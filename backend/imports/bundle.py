"""What an import ZIP holds: its documents, each a list of pages (a PAGE/ALTO file and its image).

Layout, as Transkribus and eScriptorium export it: the XML files in a ``page/`` or ``alto/``
folder beside the images, or beside them; one document per folder holding XML files (the
``page/``/``alto/`` folder counts as its parent). A file's image is the one it names (its
imageFilename / sourceImageInformation fileName), found tolerantly: the named path from the
document's folder, else the same name anywhere in the document's folder, else the same name
with another image extension, in any case; never outside the ZIP. Pages are in the order a
``mets.xml`` of the document's folder gives, else in the natural order of their files' names
(``page2`` before ``page10``); a second file describing the same image
(a ZIP holding both ``alto/`` and ``page/``) is passed over.

Everything here reads the client's bytes through :mod:`untrusted` (names, links, sizes, bombs,
DTDs); the shared exceptions become this backend's IMPORT_* errors in :func:`_as_app_error`.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from lxml import etree

from backend.documents.schemas import MAX_LINE_TEXT
from backend.errors import AppError, ErrorCode
from backend.imports.mets import MetsOrder, is_mets, mets_order
from backend.imports.transkribus import DocumentFacts, embedded, is_trp_metadata, read_facts
from backend.transcripts.alto_reader import is_alto, read_alto
from backend.transcripts.page_reader import is_page, read_page
from backend.transcripts.reading import ReadPage
from untrusted.archive import (
    ArchiveLimits,
    Layout,
    UnpackBudget,
    checked_entries,
    is_ignorable,
    name_key,
    read_entry,
)
from untrusted.errors import (
    ArchiveTooLargeError,
    DamagedArchiveError,
    InvalidArchiveError,
    UnsafeArchiveError,
    UntrustedInputError,
    XmlRefusedError,
)
from untrusted.xml import parse_xml

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"})
# Folders Transkribus (page/) and eScriptorium or kraken users (alto/, xml/) keep the XML in.
XML_FOLDERS = frozenset({"page", "alto", "xml"})
# XML that travels with an export and is not a page: METS without its namespace (a METS file in
# its namespace gives the page order; Transkribus' document metadata, alone or in the METS, its facts).
_COMPANIONS = frozenset({"mets"})
_DIGITS = re.compile(r"(\d+)")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportLimits:
    archive: ArchiveLimits
    max_xml_bytes: int
    max_image_bytes: int
    max_pages: int
    max_lines_per_page: int
    # Coordinate points of all pages' lines together (they stay in memory until the import ends).
    max_points: int = 5_000_000
    # Characters of all pages' lines' texts together (kept in memory the same way).
    max_text_chars: int = 20_000_000


def _text_size(read: ReadPage, shown: str) -> int:
    """The characters of the page's texts (a person's and the OCR's); a line longer than a
    correction may be is refused."""
    size = 0
    for number, made in enumerate(read.lines, 1):
        longest = max(len(made.text), len(made.ocr_text or ""))
        if longest > MAX_LINE_TEXT:
            raise AppError(
                ErrorCode.IMPORT_INVALID_XML,
                f"{shown}: line {number} holds {longest} characters; a line may hold at most {MAX_LINE_TEXT}.",
                details={"file": shown, "line": number, "maxLineChars": MAX_LINE_TEXT},
            )
        size += len(made.text) + len(made.ocr_text or "")
    return size


def _within(total: int, limit: int, name: str, what: str, reached: zipfile.ZipInfo) -> None:
    """Refuse the ZIP once a whole-archive budget (``what`` with '{}' for the limit) is passed."""
    if total > limit:
        raise AppError(
            ErrorCode.IMPORT_UNSAFE_ARCHIVE,
            f"The ZIP's PAGE and ALTO files {what.format(limit)} together "
            f"(reached at {reached.filename[:200]!r}); import it in parts.",
            details={name: limit},
        )


@dataclass(frozen=True)
class BundledPage:
    xml_name: str
    image: zipfile.ZipInfo
    read: ReadPage


@dataclass
class BundledDocument:
    folder: str  # the document's folder in the ZIP ('' for its root)
    pages: list[BundledPage] = field(default_factory=list)
    # What Transkribus' metadata of the document says (its title, writer, date), if the ZIP has it.
    facts: DocumentFacts | None = None


@dataclass(frozen=True)
class _Companion:
    """A file beside the pages: a METS file's page order, Transkribus' facts of the document."""

    order: MetsOrder | None
    facts: DocumentFacts | None


def _code(exc: UntrustedInputError) -> ErrorCode:
    if isinstance(exc, XmlRefusedError):
        return ErrorCode.IMPORT_INVALID_XML
    if isinstance(exc, DamagedArchiveError):
        return ErrorCode.IMPORT_NOT_A_ZIP
    return ErrorCode.IMPORT_UNSAFE_ARCHIVE


@contextmanager
def as_app_error() -> Iterator[None]:
    """The shared readers' refusals as this backend's IMPORT_* errors (4xx)."""
    try:
        yield
    except (DamagedArchiveError, InvalidArchiveError, UnsafeArchiveError, ArchiveTooLargeError, XmlRefusedError) as exc:
        raise AppError(_code(exc), exc.message) from exc


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """``page2`` before ``page10``: digit runs compare as numbers (case ignored elsewhere)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name_key(name)))


def _document_folder(path: PurePosixPath) -> PurePosixPath:
    parent = path.parent
    if parent.name.casefold() in XML_FOLDERS:
        parent = parent.parent
    return parent


class _Images:
    """The ZIP's images, found by path, by name and by stem (any case), within a folder."""

    def __init__(self) -> None:
        self.by_path: dict[str, zipfile.ZipInfo] = {}
        self.paths: list[PurePosixPath] = []
        # Each image's document folder (None: no document's), once the documents' folders are known.
        self.owners: dict[PurePosixPath, PurePosixPath | None] = {}

    def add(self, path: PurePosixPath, info: zipfile.ZipInfo) -> None:
        self.by_path[name_key(path)] = info
        self.paths.append(path)

    def assign(self, folders: frozenset[PurePosixPath]) -> None:
        """Give each image to its document: the nearest of ``folders`` (every document's) above it."""
        self.owners = {p: _owner(p, folders) for p in self.paths}

    def find(self, named: str, xml_path: PurePosixPath, folder: PurePosixPath) -> zipfile.ZipInfo | None:
        """The image ``named`` by the XML at ``xml_path`` of the document in ``folder``. Searched
        for by name only among the images this document owns (see ``assign``), then among those
        no document owns: never another document's page of the same name."""
        # Windows exports name images with backslashes; a URL or absolute path keeps only its name.
        parts = [p for p in re.split(r"[\\/]", named) if p and p not in (".", "..")]
        wanted = PurePosixPath(*parts) if parts else PurePosixPath(xml_path.stem)
        for base in (folder, xml_path.parent):
            direct = self.by_path.get(name_key(base / wanted))
            if direct is not None:
                return direct
        owned = [p for p in self.paths if self.owners.get(p) == folder]
        unowned = [p for p in self.paths if self.owners.get(p) is None]
        for matches in (
            [p for p in owned if name_key(p.name) == name_key(wanted.name)],
            [p for p in owned if name_key(p.stem) == name_key(wanted.stem)],
            [p for p in unowned if name_key(p.name) == name_key(wanted.name)],
        ):
            if len(matches) == 1:
                return self.by_path[name_key(matches[0])]
            if matches:
                # Several candidates: the one nearest the document's folder, then by name.
                nearest = min(matches, key=lambda p: (len(p.parts), natural_key(str(p))))
                return self.by_path[name_key(nearest)]
        return None


def _owner(path: PurePosixPath, folders: frozenset[PurePosixPath]) -> PurePosixPath | None:
    """The document folder nearest above ``path`` (the ZIP's root '.' is above every path)."""
    above = [f for f in folders if f == PurePosixPath(".") or f in path.parents]
    return max(above, key=lambda f: len(f.parts) if f != PurePosixPath(".") else 0, default=None)


def _read_xml(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: UnpackBudget, limits: ImportLimits
) -> ReadPage | _Companion | None:
    """The page a PAGE or ALTO file describes, what a METS file or Transkribus' metadata says
    of the document, or None for another known companion file."""
    shown = info.filename
    with as_app_error():
        data = read_entry(archive, info, budget, max_bytes=limits.max_xml_bytes, what="PAGE or ALTO file")
        root = parse_xml(data, shown)
    if is_page(root):
        read = read_page(root, shown)
    elif is_alto(root):
        read = read_alto(root, shown)
    elif is_mets(root):
        metadata = embedded(root)
        return _Companion(mets_order(root), read_facts(metadata) if metadata is not None else None)
    elif is_trp_metadata(root):
        return _Companion(None, read_facts(root))
    elif etree.QName(root).localname in _COMPANIONS:
        return None
    else:
        raise AppError(
            ErrorCode.IMPORT_INVALID_XML,
            f"{shown} is neither PAGE XML (2013 or 2019) nor ALTO (v2 to v4): "
            f"its root is <{etree.QName(root).localname}>.",
        )
    if len(read.lines) > limits.max_lines_per_page:
        raise AppError(
            ErrorCode.IMPORT_INVALID_XML,
            f"{shown} has {len(read.lines)} lines; a page may have at most {limits.max_lines_per_page}.",
        )
    return read


def _mets_place(order: MetsOrder, page: BundledPage) -> float:
    # Pages the METS file does not name keep their name order after those it does (a stable sort).
    place = order.place(page.xml_name, page.image.filename)
    return float("inf") if place is None else place


def read_bundle(archive: zipfile.ZipFile, limits: ImportLimits, budget: UnpackBudget) -> list[BundledDocument]:
    """The ZIP's documents in the order of their folders' names, each page with its image entry.
    ``budget`` counts the bytes unpacked (here the XML; the images when they are read)."""
    xmls: list[tuple[PurePosixPath, zipfile.ZipInfo]] = []
    images = _Images()
    # Files are found case-blind (as a user's Windows or macOS shows them): two names apart only
    # in case or Unicode form are one name, and which of them a page means cannot be told.
    layout = Layout()
    with as_app_error():
        for info, path in checked_entries(archive, limits.archive):
            if info.is_dir() or not path.parts or is_ignorable(path.parts):
                continue
            layout.add_file(path, info.filename)
            suffix = path.suffix.lower()
            if suffix == ".xml":
                budget.declare(info.file_size)
                xmls.append((path, info))
            elif suffix in IMAGE_SUFFIXES:
                budget.declare(info.file_size)
                images.add(path, info)
    # Every folder that holds XML is a document's (or its METS's): an image is never taken from another's.
    images.assign(frozenset(_document_folder(path) for path, _ in xmls))
    documents: dict[PurePosixPath, BundledDocument] = {}
    orders: dict[PurePosixPath, MetsOrder] = {}
    facts: dict[PurePosixPath, DocumentFacts] = {}
    points = characters = 0
    for path, info in sorted(xmls, key=lambda item: natural_key(str(item[0]))):
        read = _read_xml(archive, info, budget, limits)
        if read is None:
            continue
        folder = _document_folder(path)
        if isinstance(read, _Companion):
            if read.order is not None:
                orders[folder] = read.order
            if read.facts is not None:
                # metadata.xml (first in name order) over the copy in mets.xml, fact by fact.
                facts[folder] = facts[folder].or_else(read.facts) if folder in facts else read.facts
            continue
        image = images.find(read.image_name, path, folder)
        if image is None:
            raise AppError(
                ErrorCode.IMPORT_IMAGE_MISSING,
                f"{info.filename} names the image {read.image_name[:200]!r}, which the ZIP does not hold "
                "(under any extension or folder).",
                details={"file": info.filename, "image": read.image_name[:200]},
            )
        if image.file_size > limits.max_image_bytes:
            raise AppError(
                ErrorCode.IMPORT_IMAGE_INVALID,
                f"The image {image.filename!r} is larger than {limits.max_image_bytes / 1024**2:g} MB.",
            )
        document = documents.setdefault(folder, BundledDocument(folder=str(folder) if str(folder) != "." else ""))
        described = next((p.xml_name for p in document.pages if p.image is image), None)
        if described is not None:
            # An export in both formats (page/ and alto/ beside the same images) describes each
            # page twice: the page is imported once, from the file first in name order.
            log.info("import: %s describes the same image as %s; left out", info.filename, described)
            continue
        # What stays in memory until the import ends (a page described twice is left out above).
        points += sum(len(line.baseline) + len(line.polygon) for line in read.lines)
        _within(points, limits.max_points, "maxPoints", "describe lines with more than {} coordinate points", info)
        characters += _text_size(read, info.filename)
        _within(characters, limits.max_text_chars, "maxTextChars", "hold more than {} characters of text", info)
        document.pages.append(BundledPage(xml_name=info.filename, image=image, read=read))
        if len(document.pages) > limits.max_pages:
            raise AppError(
                ErrorCode.TOO_MANY_PAGES,
                f"The document in {document.folder or 'the ZIP'!r} has more than {limits.max_pages} pages.",
            )
    if not documents:
        raise AppError(ErrorCode.IMPORT_NOTHING_FOUND, "The ZIP holds no PAGE XML or ALTO file to import.")
    for folder, order in orders.items():
        if folder in documents:
            documents[folder].pages.sort(key=lambda page: _mets_place(order, page))
    for folder, known in facts.items():
        if folder in documents:
            documents[folder].facts = known
    return [documents[key] for key in sorted(documents, key=lambda f: natural_key(str(f)))]
