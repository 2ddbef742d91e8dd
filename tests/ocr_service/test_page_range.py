"""The page range of /ocr and /ocr/stream (firstPage, lastPage): its checks, and that a page
outside it is never rendered.

The rules are property-tested on their own (any text, any JSON value, any range against any
page count: a page list or 422 INVALID_PAGE_RANGE, nothing else), then over real HTTP with a
pool that finishes pages at once (``HeldPool``: no kraken), with a spy on the PDF and TIFF
page decoders.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ocr_service.api.deps import Services
from ocr_service.app import create_app
from ocr_service.errors import AppError, ErrorCode
from ocr_service.image_pages import ImagePages
from ocr_service.page_range import PageRange, page_number
from ocr_service.pdf_pages import PdfPages
from tests.conftest import make_settings
from tests.support.held_pool import HeldPool
from tests.support.servers import FileServer, RunningApp, send_bytes, start_app, start_file_server
from tests.support.synthetic import to_pdf, to_tiff

MAX_PAGES = 6
PATHS = ["/ocr", "/ocr/stream"]
KINDS = ["pdf", "tiff"]

# --- the rules ----------------------------------------------------------------------------

numbers = st.none() | st.integers(min_value=-3, max_value=2**70)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(pages=st.integers(1, 300), first=numbers, last=numbers)
def test_a_range_is_the_pages_asked_for_or_refused_with_a_reason(
    pages: int, first: int | None, last: int | None
) -> None:
    try:
        indices = PageRange.of(first, last, text=False).indices(pages)
    except AppError as exc:
        assert (exc.code, exc.status) == (ErrorCode.INVALID_PAGE_RANGE, 422)
        assert exc.message
        if exc.details and "pages" in exc.details:
            # Past the document: the message names the page count.
            assert exc.details["pages"] == pages
            assert re.search(rf"has {pages} pages?\.", exc.message)
        low, high = 1 if first is None else first, pages if last is None else last
        assert not (1 <= low <= high <= pages)
        return
    low, high = 1 if first is None else first, pages if last is None else last
    assert 1 <= low <= high <= pages
    assert [i + 1 for i in indices] == list(range(low, high + 1))


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(text=st.text(max_size=30) | st.from_regex(r"\A[ +\-]?[0-9０-９٠-٩]{0,25}[ .eE]?[0-9]*\Z"))
def test_any_text_is_a_page_number_only_in_ascii_digits(text: str) -> None:
    try:
        number = page_number("firstPage", text, text=True)
    except AppError as exc:
        assert exc.code is ErrorCode.INVALID_PAGE_RANGE
        assert not (re.fullmatch(r"[0-9]+", text) and int(text) >= 1)
        return
    assert re.fullmatch(r"[0-9]+", text) and number == int(text) >= 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=json_values)
def test_any_json_value_is_a_page_number_only_as_a_positive_integer(value: Any) -> None:
    try:
        number = page_number("lastPage", value, text=False)
    except AppError as exc:
        assert exc.code is ErrorCode.INVALID_PAGE_RANGE
        assert isinstance(value, bool) or not isinstance(value, int) or value < 1
        return
    if value is None:
        assert number is None
    else:
        assert type(value) is int and number == value >= 1


# --- over HTTP ----------------------------------------------------------------------------


@dataclass
class Service:
    running: RunningApp
    services: Services
    files: FileServer
    # (format, index) of every page decoded, in order
    decoded: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_decoded(self) -> list[tuple[str, int]]:
        with self.lock:
            taken, self.decoded[:] = list(self.decoded), []
        return taken


def document(kind: str, pages: int) -> bytes:
    # Each page a width of its own: the answer's widths show which pages were read.
    images = [Image.new("L", (40 + 8 * n, 50), 255) for n in range(pages)]
    return to_pdf(images, dpi=72) if kind == "pdf" else to_tiff(images)


def width_of(page: int) -> int:
    return 40 + 8 * (page - 1)


DOCUMENTS = {(kind, pages): document(kind, pages) for kind in KINDS for pages in range(1, MAX_PAGES + 2)}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    files = start_file_server(
        {f"/{kind}-{pages}": send_bytes(data, "application/octet-stream") for (kind, pages), data in DOCUMENTS.items()}
    )
    settings_ = make_settings(
        tmp_path_factory.mktemp("range-models"),
        workers=1,
        max_pages=MAX_PAGES,
        pdf_dpi=72,
        allowed_pdf_hosts=["127.0.0.1"],
        allow_private_addresses=True,
    )
    app = create_app(settings_)
    services: Services = app.state.services
    pool = HeldPool(workers=1)
    pool.release.set()  # every page finishes at once
    services.pool = pool  # type: ignore[assignment]
    services.ocr.pool = pool  # type: ignore[assignment]
    spied: Service | None = None

    def spy(kind: str, decode: Any) -> Any:
        def page(self: Any, index: int) -> Image.Image:
            assert spied is not None
            with spied.lock:
                spied.decoded.append((kind, index))
            return decode(self, index)

        return page

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PdfPages, "page", spy("pdf", PdfPages.page))
        patch.setattr(ImagePages, "page", spy("tiff", ImagePages.page))
        running = start_app(app)
        spied = Service(running, services, files)
        yield spied
        running.stop()
    files.stop()


def read(service: Service, path: str, **request: Any) -> tuple[int, Any]:
    """Status and body (the /ocr answer, the stream's events, or the error) of one request."""
    with service.running.client() as client, client.stream("POST", path, **request) as response:
        body = response.read()
    if response.status_code != 200 or path == "/ocr":
        return response.status_code, json.loads(body)
    return 200, [json.loads(line) for line in body.splitlines() if line.strip()]


def pages_read(path: str, body: Any) -> list[tuple[int, int]]:
    """(page number, width) of every page in an answer, checking the stream's own bookkeeping."""
    if path == "/ocr":
        return [(page["page"], page["width"]) for page in body["pages"]]
    assert body[-1]["type"] == "done"
    return [(event["page"], event["width"]) for event in body if event["type"] == "page"]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(KINDS),
    path=st.sampled_from(PATHS),
    pages=st.integers(1, MAX_PAGES),
    first=st.none() | st.integers(1, MAX_PAGES + 2),
    last=st.none() | st.integers(1, MAX_PAGES + 2),
    as_json=st.booleans(),
)
def test_only_the_pages_in_range_are_decoded_and_keep_their_numbers(
    service: Service, kind: str, path: str, pages: int, first: int | None, last: int | None, as_json: bool
) -> None:
    fields = {name: value for name, value in (("firstPage", first), ("lastPage", last)) if value is not None}
    if as_json:
        request: dict[str, Any] = {"json": {"documentUrl": f"{service.files.url}/{kind}-{pages}", **fields}}
    else:
        request = {
            "files": {"file": (f"doc.{kind}", DOCUMENTS[kind, pages])},
            "data": {k: str(v) for k, v in fields.items()},
        }
    service.take_decoded()
    status, body = read(service, path, **request)
    decoded = service.take_decoded()
    low, high = 1 if first is None else first, pages if last is None else last
    if not 1 <= low <= high <= pages:
        assert (status, body["code"]) == (422, "INVALID_PAGE_RANGE"), body
        assert decoded == []
        if (first is None or last is None or first <= last) and max(first or 0, last or 0) > pages:
            assert re.search(rf"has {pages} pages?\.", body["message"]), body
        return
    assert status == 200, body
    wanted = list(range(low, high + 1))
    assert pages_read(path, body) == [(page, width_of(page)) for page in wanted]
    # The pages in range were decoded once each, in order; none outside it ever was.
    assert decoded == [(kind, page - 1) for page in wanted]
    if path == "/ocr/stream":
        assert all(event["pages"] == pages for event in body if event["type"] in ("page", "done"))
        assert all(event["page"] in wanted for event in body if event["type"] == "line")


HOSTILE = [
    "1e9",
    "-0",
    "-1",
    "0",
    "00",
    " 3",
    "3 ",
    "3\n",
    "+3",
    "3.0",
    "0x3",
    "1_0",
    "３",
    "٣",
    "",
    "nan",
    "\x00",
    "9" * 1000,
    str(2**64),
    "99999999999999999999999999999999999999",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["firstPage", "lastPage"])
@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:20] for v in HOSTILE])
def test_a_hostile_page_number_is_422_with_its_code(service: Service, path: str, name: str, value: str) -> None:
    service.take_decoded()
    status, body = read(service, path, files={"file": ("doc.pdf", DOCUMENTS["pdf", 3])}, data={name: value})
    assert (status, body["code"]) == (422, "INVALID_PAGE_RANGE"), body
    assert body["message"] and len(body["message"]) < 300
    assert service.take_decoded() == []
    if value.isascii() and value.isdigit() and int(value) > 3:
        assert "has 3 pages" in body["message"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "value",
    [1e9, 3.0, -0, -1, 0, True, False, "3", [3], {"page": 3}, 2**64, 10**100],
    ids=repr,
)
def test_a_hostile_json_page_number_is_422_before_anything_is_fetched(service: Service, path: str, value: Any) -> None:
    before = list(service.files.hits)
    status, body = read(service, path, json={"documentUrl": f"{service.files.url}/pdf-3", "firstPage": value})
    assert (status, body["code"]) == (422, "INVALID_PAGE_RANGE"), body
    if isinstance(value, int) and not isinstance(value, bool) and value > 3:
        # A number is checked against the document, which is then fetched (and refused).
        assert "has 3 pages" in body["message"]
    else:
        assert service.files.hits == before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "fields",
    [
        [("firstPage", "2"), ("firstPage", "2")],
        [("lastPage", "2"), ("lastPage", "3")],
        [("firstPage", "1"), ("lastPage", "2"), ("firstPage", "2")],
    ],
    ids=["first-twice", "last-twice", "first-twice-around-last"],
)
def test_a_page_field_sent_twice_is_refused(service: Service, path: str, fields: list[tuple[str, str]]) -> None:
    status, body = read(service, path, files=[("file", ("doc.pdf", DOCUMENTS["pdf", 3])), *fields_as_parts(fields)])
    assert (status, body["code"]) == (422, "INVALID_PAGE_RANGE"), body
    assert "more than once" in body["message"]


def fields_as_parts(fields: list[tuple[str, str]]) -> list[tuple[str, tuple[None, str]]]:
    return [(name, (None, value)) for name, value in fields]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("key", ["firstPage", "lastPage"])
def test_a_page_key_given_twice_in_json_is_refused_before_anything_is_fetched(
    service: Service, path: str, key: str
) -> None:
    before = list(service.files.hits)
    url = json.dumps(f"{service.files.url}/pdf-3")
    content = f'{{"documentUrl": {url}, "{key}": 1, "{key}": 2}}'.encode()
    status, body = read(service, path, content=content, headers={"content-type": "application/json"})
    assert (status, body["code"]) == (422, "INVALID_PAGE_RANGE"), body
    assert "more than once" in body["message"]
    assert service.files.hits == before


@pytest.mark.parametrize("path", PATHS)
def test_a_page_number_sent_as_a_file_is_refused(service: Service, path: str) -> None:
    # A second file part is over the form's one-file limit; a lone one is not text.
    status, body = read(
        service,
        path,
        files=[("file", ("doc.pdf", DOCUMENTS["pdf", 3])), ("firstPage", ("p.txt", b"2"))],
    )
    assert (status, body["code"]) == (422, "INVALID_REQUEST"), body


@pytest.mark.parametrize("path", PATHS)
def test_the_form_keeps_its_field_count_limit(service: Service, path: str) -> None:
    parts = [("note", (None, "x"))] * 2 + [("firstPage", (None, "1")), ("lastPage", (None, "2")), ("model", (None, ""))]
    status, body = read(service, path, files=[("file", ("doc.pdf", DOCUMENTS["pdf", 3])), *parts])
    assert (status, body["code"]) == (422, "INVALID_REQUEST"), body
    assert "Too many fields" in body["message"]


@pytest.mark.parametrize("path", PATHS)
def test_a_page_field_over_the_field_size_limit_is_refused(service: Service, path: str) -> None:
    status, body = read(service, path, files={"file": ("doc.pdf", DOCUMENTS["pdf", 3])}, data={"firstPage": "1" * 2000})
    assert (status, body["code"]) == (422, "INVALID_REQUEST"), body


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", PATHS)
def test_the_page_limit_applies_to_the_whole_document_whatever_the_range(
    service: Service, kind: str, path: str
) -> None:
    status, body = read(
        service,
        path,
        files={"file": (f"doc.{kind}", DOCUMENTS[kind, MAX_PAGES + 1])},
        data={"firstPage": "1", "lastPage": "1"},
    )
    assert (status, body["code"]) == (413, "TOO_MANY_PAGES"), body


def test_a_resumed_range_reads_from_its_first_page_to_the_end(service: Service) -> None:
    service.take_decoded()
    status, body = read(
        service, "/ocr/stream", files={"file": ("doc.tif", DOCUMENTS["tiff", MAX_PAGES])}, data={"firstPage": "4"}
    )
    assert status == 200
    assert pages_read("/ocr/stream", body) == [(p, width_of(p)) for p in range(4, MAX_PAGES + 1)]
    assert body[-1]["pages"] == MAX_PAGES
    assert [index for _, index in service.take_decoded()] == list(range(3, MAX_PAGES))
