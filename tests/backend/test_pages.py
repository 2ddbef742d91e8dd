"""Page images: rendered once (upright, each page), cached under pages/, served with HTTP caching, bounded."""

from __future__ import annotations

import io
import itertools
import math
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import pypdfium2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import update

from backend.documents.models import Document, Page
from backend.documents.render import RenderedPage, RenderLimits
from backend.errors import ErrorCode
from backend.storage import KEY
from tests.backend.conftest import Actors, AppFactory, FakeClock, add_user, bearer, services_of
from tests.backend.documents import make_document
from tests.support.pdf_builds import nested_forms_pdf

CODES = {code.value for code in ErrorCode}
# Seeded (derandomize): the same examples on every run. The database is not emptied between the
# examples of one test, so each example uploads a file of its own (UNIQUE).
FUZZ = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
UNIQUE = itertools.count(100_000)


def upload(actors: Actors, content: bytes, title: str = "Brief") -> int:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("scan.bin", content, "application/octet-stream")},
        data={"title": title},
    )
    assert response.status_code == 201, response.text
    document_id: int = response.json()["id"]
    return document_id


def decoded(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    image = Image.open(io.BytesIO(response.content), formats=["WEBP"])
    image.load()
    return image.convert("RGB")


def page_files(actors: Actors) -> list[str]:
    root = services_of(actors.client).settings.storage_dir / "pages"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def original_path(actors: Actors, document_id: int) -> Path:
    services = services_of(actors.client)
    with services.db.sessions() as session:
        key = session.get_one(Document, document_id).storage_key
    return services.settings.storage_dir / key


def close_to(pixel: tuple[int, ...], color: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=True))


RED, BLUE = (220, 20, 20), (20, 20, 220)


def exif_jpeg(orientation: int, size: tuple[int, int] = (120, 80)) -> bytes:
    """Stored ``size``: the top half red, the bottom half blue, with the given EXIF orientation."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0], size[1] // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def test_a_photo_turned_by_its_exif_orientation_is_shown_upright(actors: Actors) -> None:
    # Orientation 6: the camera was turned; the picture must be turned 90° clockwise to stand up.
    # The stored top (red) then is the right-hand side.
    document_id = upload(actors, exif_jpeg(6))
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [(p["number"], p["width"], p["height"]) for p in pages] == [(1, 80, 120)]
    image = decoded(actors.client.get(pages[0]["imageUrl"], headers=actors.archivist))
    assert image.size == (80, 120)
    assert close_to(image.getpixel((70, 60)), RED) and close_to(image.getpixel((10, 60)), BLUE)
    thumbnail = decoded(actors.client.get(pages[0]["thumbnailUrl"], headers=actors.archivist))
    assert thumbnail.size == (80, 120)  # already below the thumbnail's side: never scaled up


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_size_the_ocr_service_reads(actors: Actors, orientation: int) -> None:
    from ocr_service.decoding import ParseBudget
    from ocr_service.image_pages import ImagePages

    content = exif_jpeg(orientation)
    document_id = upload(actors, content)
    page = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()[0]
    ocr_page = ImagePages(content, "JPEG", _ocr_limits(), ParseBudget(60)).page(0)
    assert (page["width"], page["height"]) == ocr_page.size
    assert decoded(actors.client.get(page["imageUrl"], headers=actors.archivist)).size == ocr_page.size


def _ocr_limits() -> Any:
    from ocr_service.page_limits import PageLimits

    return PageLimits(
        max_pages=500,
        max_page_pixels=60_000_000,
        pdf_dpi=300,
        max_aspect_ratio=100,
        max_segmentation_width=10**9,
        open_timeout_s=60,
    )


def _pdf(sizes: list[tuple[float, float]]) -> bytes:
    pdf = pypdfium2.PdfDocument.new()
    for width, height in sizes:
        pdf.new_page(width, height)
    buffer = io.BytesIO()
    pdf.save(buffer)
    pdf.close()
    return buffer.getvalue()


@FUZZ
@given(
    sizes=st.lists(
        st.tuples(st.floats(min_value=20, max_value=5000), st.floats(min_value=20, max_value=5000)),
        min_size=1,
        max_size=3,
    )
)
def test_pdf_page_sizes_are_those_the_ocr_service_renders(actors: Actors, sizes: list[tuple[float, float]]) -> None:
    from ocr_service.pdf_pages import PdfPages
    from ocr_service.pdf_render import shared_renderer

    services = services_of(actors.client)
    # Headers only: the service's rule for pages over its pixel limit included (5000 pt at 300 dpi).
    content = _pdf(sizes)
    ocr = PdfPages(content, _ocr_limits(), shared_renderer())
    try:
        expected = []
        for index, (width_pt, height_pt) in enumerate(sizes):
            scale = ocr._scale(index, width_pt, height_pt)
            expected.append((math.ceil(width_pt * scale), math.ceil(height_pt * scale)))
    finally:
        ocr.close()
    from backend.documents.render import ocr_sizes

    assert ocr_sizes(io.BytesIO(content), "application/pdf", services.pages.limits) == expected


def test_each_page_of_a_pdf_is_rendered_at_the_display_dpi(actors: Actors) -> None:
    sizes = [(200.0, 300.0), (300.0, 200.0), (612.0, 792.0)]
    document_id = upload(actors, _pdf(sizes))
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [p["number"] for p in pages] == [1, 2, 3]
    for page, (width_pt, height_pt) in zip(pages, sizes, strict=True):
        # The lines' space: 300 dpi like the OCR service (its arithmetic: 792 pt → 3301 px, not 3300);
        # the image: 150 dpi, the same proportions.
        ocr, display = 300 / 72, 150 / 72
        assert (page["width"], page["height"]) == (math.ceil(width_pt * ocr), math.ceil(height_pt * ocr))
        image = decoded(actors.client.get(page["imageUrl"], headers=actors.archivist))
        assert image.size == (math.ceil(width_pt * display), math.ceil(height_pt * display))
        thumbnail = decoded(actors.client.get(page["thumbnailUrl"], headers=actors.archivist))
        assert max(thumbnail.size) == 300
        assert abs(thumbnail.width / thumbnail.height - width_pt / height_pt) < 0.02
    assert len(page_files(actors)) == 6


def test_each_frame_of_a_tiff_is_its_own_page(actors: Actors) -> None:
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    frames = [Image.new("RGB", (60, 40 + n), color) for n, color in enumerate(colors)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:])
    document_id = upload(actors, buffer.getvalue())
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [(p["width"], p["height"]) for p in pages] == [(60, 40 + n) for n in range(4)]
    for page, color in zip(pages, colors, strict=True):
        image = decoded(actors.client.get(page["imageUrl"], headers=actors.archivist))
        assert image.size == (page["width"], page["height"])
        assert close_to(image.getpixel((30, 20)), color, tolerance=12)


def test_a_large_photo_is_brought_down_to_the_longest_side(app_factory: AppFactory, clock: FakeClock) -> None:
    client = app_factory(clock=clock, page_max_side=500, page_thumbnail_side=64)
    actors = Actors(client, {}, {})
    add_user(client, "erika", _archivist())
    actors.archivist = bearer(client, "erika")
    photo = Image.effect_noise((1600, 1200), 60).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    document_id = upload(actors, buffer.getvalue())
    page = client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()[0]
    assert (page["width"], page["height"]) == (1600, 1200)  # the lines' space stays the photo's pixels
    assert decoded(client.get(page["imageUrl"], headers=actors.archivist)).size == (500, 375)
    assert decoded(client.get(page["thumbnailUrl"], headers=actors.archivist)).size == (64, 48)


def _archivist() -> Any:
    from backend.users.models import Role

    return Role.ARCHIVIST


def test_a_transparent_page_is_laid_on_white(actors: Actors) -> None:
    image = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    document_id = upload(actors, buffer.getvalue())
    shown = decoded(actors.client.get(f"/api/documents/{document_id}/pages/1/image", headers=actors.archivist))
    assert close_to(shown.getpixel((25, 25)), (255, 255, 255), tolerance=3)


# --- rendered once ---------------------------------------------------------------------


class CountingRender:
    """Wraps the renderer: counts renders and holds each until the test lets it go."""

    def __init__(self, render: Callable[[BinaryIO, str, int, RenderLimits], RenderedPage]) -> None:
        self.render = render
        self.count = 0
        self.gate = threading.Event()
        self.started = threading.Event()

    def __call__(self, source: BinaryIO, media_type: str, number: int, limits: RenderLimits) -> RenderedPage:
        self.count += 1
        self.started.set()
        assert self.gate.wait(30), "the test never let the render go"
        return self.render(source, media_type, number, limits)


def test_concurrent_requests_for_a_page_render_it_once(actors: Actors) -> None:
    services = services_of(actors.client)
    document_id = upload(actors, make_document("pdf", 7, pages=2))
    counting = CountingRender(services.pages.render)
    services.pages.render = counting
    urls = [f"/api/documents/{document_id}/pages/1/{kind}" for kind in ("image", "thumbnail")] * 6
    with ThreadPoolExecutor(len(urls)) as pool:
        futures = [pool.submit(actors.client.get, url, headers=actors.archivist) for url in urls]
        assert counting.started.wait(30)
        # The render runs in a thread: the app answers other requests meanwhile.
        assert actors.client.get("/api/auth/me", headers=actors.archivist).status_code == 200
        # Let the render go only once every request waits for this page (or has its answer).
        with services.db.sessions() as session:
            page_id = session.query(Page.id).filter_by(document_id=document_id, number=1).scalar()
        while services.pages.locks.waiting(page_id) < len(urls) and not all(f.done() for f in futures):
            threading.Event().wait(0.01)
        counting.gate.set()
        responses = [f.result() for f in futures]
    assert counting.count == 1
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses if r.url.path.endswith("/image")}) == 1
    assert len({r.content for r in responses if r.url.path.endswith("/thumbnail")}) == 1
    assert len(page_files(actors)) == 2
    assert len(services.pages.locks) == 0  # nothing kept per page once nobody waits
    # Later requests read the cache.
    actors.client.get(urls[0], headers=actors.archivist)
    assert counting.count == 1


def test_a_rendering_stored_first_by_another_process_is_served_and_ours_deleted(actors: Actors) -> None:
    services = services_of(actors.client)
    document_id = upload(actors, make_document("png", 8))
    render = services.pages.render
    theirs: list[str] = []

    def another_process_wins(source: BinaryIO, media_type: str, number: int, limits: RenderLimits) -> RenderedPage:
        rendered = render(source, media_type, number, limits)
        theirs.extend(services.pages.storage.save(io.BytesIO(data), "pages") for data in (b"img", b"thumb"))
        with services.db.sessions() as session:
            session.execute(
                update(Page)
                .where(Page.document_id == document_id)
                .values(image_key=theirs[0], thumbnail_key=theirs[1], width=1, height=1)
            )
            session.commit()
        return rendered

    services.pages.render = another_process_wins
    response = actors.client.get(f"/api/documents/{document_id}/pages/1/image", headers=actors.archivist)
    assert response.status_code == 200 and response.content == b"img"
    assert response.headers["etag"] == f'"{theirs[0].rsplit("/", 1)[1]}"'
    assert page_files(actors) == sorted(key.rsplit("/", 1)[1] for key in theirs)


def test_a_missing_cached_image_is_rendered_again(actors: Actors) -> None:
    document_id = upload(actors, make_document("png", 9))
    url = f"/api/documents/{document_id}/pages/1/image"
    first = actors.client.get(url, headers=actors.archivist)
    root = services_of(actors.client).settings.storage_dir / "pages"
    for path in root.iterdir():
        path.unlink()
    again = actors.client.get(url, headers=actors.archivist)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["etag"] != first.headers["etag"]
    assert len(page_files(actors)) == 2


# --- HTTP --------------------------------------------------------------------------------


def test_page_images_carry_validators_and_answer_304_when_unchanged(actors: Actors) -> None:
    document_id = upload(actors, make_document("jpeg", 10))
    url = f"/api/documents/{document_id}/pages/1/thumbnail"
    response = actors.client.get(url, headers=actors.archivist)
    etag = response.headers["etag"]
    assert KEY.fullmatch("pages/" + etag.strip('"'))
    assert response.headers["cache-control"] == "private, max-age=3600"
    assert response.headers["x-content-type-options"] == "nosniff"
    for given_tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = actors.client.get(url, headers={**actors.archivist, "If-None-Match": given_tag})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == etag and cached.headers["cache-control"] == "private, max-age=3600"
    changed = actors.client.get(url, headers={**actors.archivist, "If-None-Match": '"other"'})
    assert changed.status_code == 200 and changed.content == response.content
    image = actors.client.get(f"/api/documents/{document_id}/pages/1/image", headers=actors.archivist)
    assert image.headers["etag"] != etag


def test_page_images_are_for_logged_in_users_only(actors: Actors) -> None:
    document_id = upload(actors, make_document("png", 11))
    for path in ("pages", "pages/1/image", "pages/1/thumbnail"):
        response = actors.client.get(f"/api/documents/{document_id}/{path}")
        assert (response.status_code, response.json()["code"]) == (401, "NOT_AUTHENTICATED")
    assert page_files(actors) == []


def test_pages_of_a_trashed_document_are_gone_for_archivists_but_shown_to_admins(actors: Actors) -> None:
    document_id = upload(actors, make_document("pdf", 12, pages=2))
    assert actors.client.delete(f"/api/documents/{document_id}", headers=actors.archivist).status_code == 204
    for path in ("pages", "pages/1/image", "pages/2/thumbnail"):
        url = f"/api/documents/{document_id}/{path}"
        response = actors.client.get(url, headers=actors.archivist)
        assert (response.status_code, response.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
        assert actors.client.get(url, headers=actors.admin).status_code == 200


def test_purging_a_document_deletes_its_page_images(actors: Actors, app_factory: AppFactory, clock: FakeClock) -> None:
    kept = upload(actors, make_document("png", 13))
    purged = upload(actors, make_document("pdf", 14, pages=2))
    for document_id in (kept, purged):
        for number in (1, 2) if document_id == purged else (1,):
            url = f"/api/documents/{document_id}/pages/{number}/image"
            assert actors.client.get(url, headers=actors.archivist).status_code == 200
    assert len(page_files(actors)) == 6
    actors.client.delete(f"/api/documents/{purged}", headers=actors.archivist)
    clock.advance(30 * 86400)
    app_factory(clock=clock)  # start-up purges what is past the trash period
    assert len(page_files(actors)) == 2
    fresh = bearer(actors.client, "erika")  # the first token has expired meanwhile
    assert actors.client.get(f"/api/documents/{kept}/pages/1/image", headers=fresh).status_code == 200


# --- bad originals and hostile input ------------------------------------------------------


@pytest.mark.parametrize("kind", ["pdf", "png", "jpeg", "tiff", "webp"])
def test_a_damaged_original_is_422_and_nothing_is_stored(actors: Actors, kind: str) -> None:
    document_id = upload(actors, make_document(kind, 15, pages=2 if kind in ("pdf", "tiff") else 1))
    path = original_path(actors, document_id)
    data = path.read_bytes()
    path.write_bytes(data[:16] + b"\x00" * 8 + data[16:40])  # the right magic, then garbage and an early end
    for suffix in ("pages", "pages/1/image", "pages/1/thumbnail"):
        response = actors.client.get(f"/api/documents/{document_id}/{suffix}", headers=actors.archivist)
        assert (response.status_code, response.json()["code"]) == (422, "CORRUPT_DOCUMENT"), suffix
    assert page_files(actors) == []


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["pdf", "png", "jpeg", "tiff", "webp"]))
def test_mutated_originals_render_or_are_refused_with_a_code(actors: Actors, seed: int, kind: str) -> None:
    content = make_document(kind, next(UNIQUE), pages=2 if kind in ("pdf", "tiff") else 1)
    document_id = upload(actors, content)
    rng = random.Random(seed)
    data = bytearray(content)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(8, len(data))] = rng.randrange(256)
    original_path(actors, document_id).write_bytes(bytes(data))
    for suffix in ("pages", "pages/1/image", "pages/2/thumbnail"):
        response = actors.client.get(f"/api/documents/{document_id}/{suffix}", headers=actors.archivist)
        assert response.status_code in (200, 404, 422), response.text
        if response.status_code != 200:
            assert response.json()["code"] in CODES


def test_an_image_page_with_too_many_pixels_is_not_decoded(app_factory: AppFactory, clock: FakeClock) -> None:
    client = app_factory(clock=clock, page_max_pixels=1_000_000)
    add_user(client, "erika", _archivist())
    actors = Actors(client, {}, bearer(client, "erika"))
    buffer = io.BytesIO()
    Image.new("L", (1001, 1000), 255).save(buffer, "PNG")
    document_id = upload(actors, buffer.getvalue())
    response = client.get(f"/api/documents/{document_id}/pages/1/image", headers=actors.archivist)
    assert (response.status_code, response.json()["code"]) == (422, "PAGE_TOO_LARGE")
    assert "1001×1000" in response.json()["message"]
    assert page_files(actors) == []


def _pdf_client(app_factory: AppFactory, clock: FakeClock, **limits: Any) -> Actors:
    client = app_factory(clock=clock, **limits)
    add_user(client, "erika", _archivist())
    return Actors(client, {}, bearer(client, "erika"))


# A page of forms nested nine levels deep renders for hours in one pdfium call, growing its
# memory by about 500 MB a second; page 1 before it is one stroke.
_PLANS = nested_forms_pdf(9, 10, quick_pages=1)


# Without the limit the render would run for hours: this fails, rather than hangs, before it.
@pytest.mark.timeout(300)
def test_a_pdf_page_too_slow_to_render_is_422_and_the_document_s_other_pages_are_shown(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    # Memory far above what the page reaches in its second: this is about the time limit.
    actors = _pdf_client(app_factory, clock, pdf_render_timeout_s=1, pdf_render_memory_mb=16 * 1024)
    document_id = upload(actors, _PLANS)
    base = f"/api/documents/{document_id}/pages"
    refused = actors.client.get(f"{base}/2/image", headers=actors.archivist)
    assert (refused.status_code, refused.json()["code"]) == (422, "DOCUMENT_TOO_COMPLEX"), refused.text
    assert refused.json()["details"] == {"page": 2, "limitSeconds": 1.0}
    assert "Page 2" in refused.json()["message"] and "1 s" in refused.json()["message"]
    assert page_files(actors) == []
    # Remembered: the thumbnail (and any later try) is answered at once, no renderer started.
    pdf = services_of(actors.client).pages.pdf
    started = pdf.children_started
    again = actors.client.get(f"{base}/2/thumbnail", headers=actors.archivist)
    assert (again.status_code, again.json()) == (422, refused.json())
    assert pdf.children_started == started
    # The renderer was killed with the page; a fresh one renders the next request.
    decoded(actors.client.get(f"{base}/1/image", headers=actors.archivist))
    assert len(page_files(actors)) == 2


@pytest.mark.timeout(300)
def test_a_pdf_page_that_needs_more_memory_than_allowed_is_422(app_factory: AppFactory, clock: FakeClock) -> None:
    actors = _pdf_client(app_factory, clock, pdf_render_timeout_s=600, pdf_render_memory_mb=384)
    document_id = upload(actors, _PLANS)
    refused = actors.client.get(f"/api/documents/{document_id}/pages/2/thumbnail", headers=actors.archivist)
    assert (refused.status_code, refused.json()["code"]) == (422, "DOCUMENT_TOO_COMPLEX"), refused.text
    assert refused.json()["details"] == {"page": 2}
    assert page_files(actors) == []


ids = st.integers(min_value=-(2**70), max_value=2**70).map(str) | st.text(max_size=20).filter(
    lambda s: s not in {"", ".", ".."} and "/" not in s
)


@FUZZ
@given(document=ids, number=ids, suffix=st.sampled_from(["image", "thumbnail"]))
def test_hostile_ids_and_page_numbers_are_404_or_422(actors: Actors, document: str, number: str, suffix: str) -> None:
    existing = upload_once(actors)
    for document_id in (document, str(existing)):
        url = f"/api/documents/{quote(document_id, safe='')}/pages/{quote(number, safe='')}/{suffix}"
        response = actors.client.get(url, headers=actors.archivist)
        assert response.status_code in (200, 404, 422), response.text
        if response.status_code != 200:
            assert response.json()["code"] in CODES
        valid_number = number.isdigit() and 1 <= int(number) < 2**31
        valid_document = document_id.isdigit() and 1 <= int(document_id) < 2**31
        if not (valid_number and valid_document):
            assert (response.status_code, response.json()["code"]) == (422, "INVALID_REQUEST")
        elif document_id != str(existing):
            assert response.json()["code"] == "DOCUMENT_NOT_FOUND"
        elif int(number) != 1:
            assert (response.status_code, response.json()["code"]) == (404, "PAGE_NOT_FOUND")
    listed = actors.client.get(f"/api/documents/{quote(document, safe='')}/pages", headers=actors.archivist)
    assert listed.status_code in (200, 404, 422)


def upload_once(actors: Actors) -> int:
    listed = actors.client.get("/api/documents", headers=actors.archivist).json()["items"]
    return int(listed[0]["id"]) if listed else upload(actors, make_document("png", 16))


def test_the_size_the_ocr_service_reports_replaces_the_one_worked_out(actors: Actors) -> None:
    from tests.backend.ocr_jobs import drain, page_events, runner
    from tests.backend.ocr_standin import Drip, start_standin

    document_id = upload(actors, make_document("pdf", 17, pages=2))
    listed = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    worked_out = [(math.ceil(217 * (300 / 72)), math.ceil(height_pt * (300 / 72))) for height_pt in (300, 301)]
    assert [(p["width"], p["height"]) for p in listed] == worked_out
    standin = start_standin()
    try:
        events = list(page_events(2))
        events[0] = {**events[0], "width": 1000, "height": 1400}  # e.g. the service's OCR_PDF_DPI differs
        events[3] = {**events[3], "width": "wide", "height": -1}  # unusable: the size stays as it was
        standin.service.plan("POST /ocr/stream", Drip(tuple(events)))
        started = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
        assert started.status_code == 202, started.text
        drain(runner(actors.client, standin.url))
    finally:
        standin.stop()
    listed = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [(p["width"], p["height"]) for p in listed] == [(1000, 1400), worked_out[1]]


class _Unseekable(io.RawIOBase):
    """A stream read front to back only, as an object store's response body is."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


class _StreamingStorage:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def save(self, source: BinaryIO, kind: str = "originals") -> str:
        key: str = self.inner.save(source, kind)
        return key

    def open(self, key: str) -> BinaryIO:
        return cast(BinaryIO, _Unseekable(self.inner.open(key)))

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return bool(self.inner.exists(key))


@pytest.mark.parametrize("kind", ["pdf", "tiff"])
def test_an_original_from_a_storage_that_cannot_seek_is_spooled_first(actors: Actors, kind: str) -> None:
    services = services_of(actors.client)
    services.pages.storage = _StreamingStorage(services.pages.storage)
    document_id = upload(actors, make_document(kind, 18, pages=2))
    listed = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [p["number"] for p in listed] == [1, 2] and all(p["width"] for p in listed)
    for page in listed:
        assert decoded(actors.client.get(page["thumbnailUrl"], headers=actors.archivist)).size[0] >= 1
        streamed = actors.client.get(page["imageUrl"], headers=actors.archivist)
        assert decoded(streamed).size[0] >= 1


def test_a_thumbnail_larger_than_the_page_image_is_refused_at_start_up(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from backend.settings import Settings

    with pytest.raises(ValidationError, match="APP_PAGE_THUMBNAIL_SIDE"):
        Settings(page_max_side=400, page_thumbnail_side=500, storage_dir=tmp_path)
