"""Photos stored sideways with an EXIF orientation: every page comes out upright, without the tag."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageStat, TiffImagePlugin

from ocr_service.documents import Document, PageLimits
from tests.support.synthetic import page_texts, render_page

LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=4_000_000,
    pdf_dpi=150,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=10.0,
)

# How the camera stored the upright page for each orientation: the inverse of the turn a
# reader must apply (EXIF 6 means "turn 90° clockwise to view", so it was stored turned back).
STORED_AS: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_page() -> Image.Image:
    """A portrait page no turn or mirror maps onto itself: text, and a dark block top left."""
    page = render_page(page_texts(7, 3, words=2), width=240, height=360, font_size=18, margin=30).image
    ImageDraw.Draw(page).rectangle((0, 0, 59, 39), fill=(40, 40, 40))
    return page


def photo(fmt: str, orientation: int, pages: int = 1) -> bytes:
    stored = upright_page()
    turn = STORED_AS[orientation]
    if turn is not None:
        stored = stored.transpose(turn)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    options: dict[str, object] = {"exif": exif.tobytes()}
    if fmt == "TIFF":
        options |= {"compression": "tiff_lzw", "save_all": True, "append_images": [stored.copy()] * (pages - 1)}
    else:
        options["quality"] = 92
    stored.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_a_photo_is_read_upright_whatever_its_orientation(fmt: str, orientation: int) -> None:
    data = photo(fmt, orientation)
    assert Image.open(io.BytesIO(data)).getexif().get(ExifTags.Base.Orientation) == orientation
    document = Document(data, LIMITS)
    document.check_all_pages()
    page = document.page(0)
    reference = upright_page()
    assert page.size == reference.size
    if fmt == "TIFF":
        assert ImageChops.difference(page.convert("RGB"), reference).getbbox() is None
    else:
        # Lossy: near the reference, and far nearer than to its mirror image.
        assert difference(page, reference) < 4
        assert difference(page, reference.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) > 4 * difference(page, reference)
    assert ExifTags.Base.Orientation not in page.getexif()
    assert page.info == {}


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_every_frame_of_a_sideways_tiff_is_upright(orientation: int) -> None:
    document = Document(photo("TIFF", orientation, pages=3), LIMITS)
    document.check_all_pages()
    assert [page.size for page in document.pages()] == [(240, 360)] * 3


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_the_shape_checks_judge_the_upright_page(fmt: str) -> None:
    # Stored 360 wide and 240 high, upright 240 x 360: a segmentation width of 1200 px.
    # A limit between the two shapes (1800 · 360/240 = 2700) refuses only the stored shape.
    narrow = replace(LIMITS, max_segmentation_width=2000)
    document = Document(photo(fmt, 6), narrow)
    document.check_all_pages()
    assert document.page(0).size == (240, 360)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_a_page_decoded_again_is_the_same_upright_page(fmt: str) -> None:
    # Pillow turns a TIFF frame in place as it loads it; a second decode must not turn it again.
    document = Document(photo(fmt, 8), LIMITS)
    document.check_all_pages()
    first = document.page(0)
    document.check_all_pages()
    again = document.page(0)
    assert first.size == again.size == (240, 360)
    assert first.tobytes() == again.tobytes()


XMP_SIDEWAYS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_an_orientation_given_only_in_xmp_is_applied_and_judged_upright(fmt: str) -> None:
    stored = upright_page().transpose(Image.Transpose.ROTATE_90)
    buffer = io.BytesIO()
    if fmt == "TIFF":
        tags = TiffImagePlugin.ImageFileDirectory_v2()
        tags[700] = XMP_SIDEWAYS
        tags.tagtype[700] = 1  # BYTE
        stored.save(buffer, format=fmt, tiffinfo=tags)
    else:
        stored.save(buffer, format=fmt, quality=92, xmp=XMP_SIDEWAYS)
    # Upright 240 x 360 passes a limit of 2000 px at 1800 px height; stored 360 x 240 would not.
    document = Document(buffer.getvalue(), replace(LIMITS, max_segmentation_width=2000))
    document.check_all_pages()
    page = document.page(0)
    assert page.size == (240, 360)
    assert difference(page, upright_page()) < 4
