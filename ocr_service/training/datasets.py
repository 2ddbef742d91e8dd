"""What an unpacked training ZIP holds, checked before a trainer is started.

Recognition takes pages with PAGE XML or ALTO (baselines, polygons and text) or line images
with ``.gt.txt`` files; segmentation takes pages with PAGE XML or ALTO. Every XML file must
name an image inside the job's folder; XML with a DOCTYPE is refused (entity expansion, see
:mod:`ocr_service.training.xml_safety`).
Line pairs are renamed to ``lineNNNNN.*``: kraken strips *every* extension to find a line's
text (``a.b.png`` looks for ``a.gt.txt``), so names with inner dots would lose their text.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lxml import etree

from ocr_service.errors import AppError, ErrorCode
from ocr_service.training.xml_safety import parse_training_xml

TrainingKind = Literal["recognition", "segmentation"]
DataFormat = Literal["xml", "path"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
GT_SUFFIX = ".gt.txt"
MIN_LINES = 10
MIN_PAGES = 2
# Below this many lines a recognition model trained from scratch reads poorly (kraken #711, #446).
FEW_LINES = 500


@dataclass
class TrainingData:
    kind: TrainingKind
    data_format: DataFormat
    files: list[Path]  # XML files, or line images (each with its .gt.txt beside it)
    lines: int
    pages: int
    page_images: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def line_type(self) -> str:
        return "bbox" if self.data_format == "path" else "baselines"


def _invalid(message: str) -> AppError:
    return AppError(ErrorCode.INVALID_TRAINING_DATA, message)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class _XmlPage:
    image: Path
    lines: int
    lines_with_text: int
    baselines: int


def _elements(element: etree._Element) -> list[etree._Element]:
    # Elements only: comments and processing instructions carry no tag name.
    return list(element.iter(etree.Element))


def _children(element: etree._Element) -> list[etree._Element]:
    return list(element.iterchildren(etree.Element))


def _read_xml_page(path: Path, root_dir: Path) -> _XmlPage | None:
    """The page an XML file describes, or None if it is neither PAGE XML nor ALTO."""
    rel = path.relative_to(root_dir)
    root = parse_training_xml(path, str(rel))
    kind = _local(root.tag)
    if kind == "PcGts":
        page = next((e for e in _elements(root) if _local(e.tag) == "Page"), None)
        image_name = page.get("imageFilename") if page is not None else None
        lines = [e for e in _elements(root) if _local(e.tag) == "TextLine"]
        baselines = sum(1 for line in lines if any(_local(c.tag) == "Baseline" for c in _children(line)))
        with_text = sum(
            1 for line in lines if any(_local(u.tag) == "Unicode" and (u.text or "").strip() for u in _elements(line))
        )
    elif kind == "alto":
        name_el = next((e for e in _elements(root) if _local(e.tag) == "fileName"), None)
        image_name = name_el.text.strip() if name_el is not None and name_el.text else None
        lines = [e for e in _elements(root) if _local(e.tag) == "TextLine"]
        baselines = sum(1 for line in lines if line.get("BASELINE"))
        with_text = sum(
            1
            for line in lines
            if any(_local(s.tag) == "String" and (s.get("CONTENT") or "").strip() for s in _children(line))
        )
    else:
        return None
    if not image_name:
        raise _invalid(f"{rel} names no page image.")
    try:
        image = (path.parent / image_name).resolve()
        inside = image.is_relative_to(root_dir.resolve())
        present = inside and image.is_file()
    except (OSError, ValueError) as exc:
        # A name the file system cannot even look up (too long, NUL): it cannot be in the ZIP.
        raise _invalid(f"{rel} names the image {image_name[:80]!r}, which cannot be a file of the ZIP.") from exc
    if not inside:
        raise _invalid(f"{rel} names an image outside the ZIP ({image_name!r}).")
    if not present:
        raise _invalid(f"{rel} names the image {image_name!r}, which is not in the ZIP.")
    return _XmlPage(image=image, lines=len(lines), lines_with_text=with_text, baselines=baselines)


def _files(root_dir: Path) -> list[Path]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(root_dir):
        for name in filenames:
            found.append(Path(dirpath) / name)
    return sorted(found)


def _line_pairs(files: list[Path]) -> list[tuple[Path, Path]]:
    texts = {str(p)[: -len(GT_SUFFIX)]: p for p in files if p.name.endswith(GT_SUFFIX)}
    pairs = []
    for image in files:
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        text = texts.get(str(image.with_suffix("")))
        if text is not None and text.read_text(encoding="utf-8", errors="replace").strip():
            pairs.append((image, text))
    return pairs


def _normalise_line_names(pairs: list[tuple[Path, Path]], lines_dir: Path) -> list[Path]:
    images = []
    for n, (image, text) in enumerate(pairs):
        new_image = lines_dir / f"line{n:05d}{image.suffix.lower()}"
        os.replace(image, new_image)
        os.replace(text, lines_dir / f"line{n:05d}{GT_SUFFIX}")
        images.append(new_image)
    return images


def scan_training_data(root_dir: Path, kind: TrainingKind) -> TrainingData:
    """Describe the unpacked data in ``root_dir`` for a ``kind`` run, or raise INVALID_TRAINING_DATA."""
    files = _files(root_dir)
    xml_pages: list[tuple[Path, _XmlPage]] = []
    for path in files:
        if path.suffix.lower() == ".xml":
            page = _read_xml_page(path, root_dir)
            if page is not None:
                xml_pages.append((path, page))
    pairs = _line_pairs(files) if kind == "recognition" else []

    if kind == "segmentation":
        if not xml_pages:
            raise _invalid("Segmentation training needs page images with PAGE XML or ALTO files; the ZIP has none.")
        usable = [(p, page) for p, page in xml_pages if page.baselines > 0]
        baselines = sum(page.baselines for _, page in usable)
        if len(usable) < MIN_PAGES:
            raise _invalid(
                f"Segmentation training needs at least {MIN_PAGES} pages with baselines; the ZIP has {len(usable)}."
            )
        return TrainingData(
            kind=kind,
            data_format="xml",
            files=[p for p, _ in usable],
            lines=baselines,
            pages=len(usable),
            page_images=[page.image for _, page in usable],
        )

    if xml_pages and pairs:
        raise _invalid(
            "The ZIP mixes PAGE XML/ALTO pages and line images with .gt.txt files; send one kind per training run."
        )
    if xml_pages:
        lines = sum(min(page.lines_with_text, page.baselines) for _, page in xml_pages)
        if lines < MIN_LINES:
            raise _invalid(
                f"Recognition training needs at least {MIN_LINES} transcribed lines with baselines; "
                f"the PAGE XML/ALTO files hold {lines}."
            )
        data = TrainingData(
            kind=kind,
            data_format="xml",
            files=[p for p, page in xml_pages if page.lines_with_text],
            lines=lines,
            pages=len(xml_pages),
            page_images=[page.image for _, page in xml_pages],
        )
    elif pairs:
        if len(pairs) < MIN_LINES:
            raise _invalid(
                f"Recognition training needs at least {MIN_LINES} line images with .gt.txt files; "
                f"the ZIP has {len(pairs)}."
            )
        # A folder of a name no ZIP entry has: renaming into one the ZIP brought could overwrite its pairs.
        images = _normalise_line_names(pairs, Path(tempfile.mkdtemp(prefix="_lines-", dir=root_dir)))
        data = TrainingData(kind=kind, data_format="path", files=images, lines=len(images), pages=0)
    else:
        raise _invalid(
            "The ZIP holds no training data: send page images with PAGE XML/ALTO files, "
            "or line images with .gt.txt files of the same name."
        )
    return data
