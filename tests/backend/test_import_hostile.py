"""Hostile import ZIPs: every one is refused with a 4xx IMPORT_* code, nothing stored, nothing read
outside the ZIP, no DTD or entity ever loaded. Generated and fuzzed, not one example each."""

from __future__ import annotations

import codecs
import io
import itertools
import os
import re
import resource
import stat
import struct
import zipfile
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from backend.documents.models import Document
from backend.errors import AppError
from backend.imports.bundle import ImportLimits, as_app_error, read_bundle
from backend.imports.original import TiffOriginal
from backend.users.models import Role
from tests.backend.conftest import Actors, AppFactory, add_user, bearer, services_of
from tests.backend.transcript_files import gen_page, image_bytes, kraken_alto, transkribus_page, zip_of
from tests.support.zip_mutations import mutated
from untrusted.archive import ArchiveLimits, UnpackBudget, open_archive, read_entry

SECRET = "geheimnis-7f3a"
PAGE = gen_page(201, "0001.png", lines=2)
VALID = {"Brief/0001.png": image_bytes(PAGE), "Brief/page/0001.xml": transkribus_page(PAGE)}
LIMITS = ImportLimits(
    archive=ArchiveLimits(max_entries=50, max_unpacked_bytes=4 * 1024 * 1024),
    max_xml_bytes=256 * 1024,
    max_image_bytes=1024 * 1024,
    max_pages=10,
    max_lines_per_page=100,
)


def post(client: TestClient, headers: dict[str, str], data: bytes) -> Any:
    return client.post("/api/imports", headers=headers, files={"file": ("x.zip", data, "application/zip")})


def refused(client: TestClient, headers: dict[str, str], data: bytes, code: str, status: int = 422) -> str:
    """The import of ``data`` fails with ``code`` and leaves no document or stored file behind."""
    services = services_of(client)
    with services.db.sessions() as session:
        before = session.scalar(select(func.count(Document.id)))
    response = post(client, headers, data)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text
    with services.db.sessions() as session:
        assert session.scalar(select(func.count(Document.id))) == before
    originals = services.settings.storage_dir / "originals"
    assert not originals.exists() or not any(originals.iterdir())
    return str(response.json()["message"])


def unpack(data: bytes, limits: ImportLimits = LIMITS) -> int:
    """Everything the import does short of the database: pages read and TIFFs built."""
    source = io.BytesIO(data)
    with as_app_error():
        archive = open_archive(source, limits.archive)
    budget = UnpackBudget(limits.archive.max_unpacked_bytes)
    pages = 0
    with archive:
        for document in read_bundle(archive, limits, budget):
            tiff = TiffOriginal(io.BytesIO(), 10_000_000)
            for page in document.pages:
                with as_app_error():
                    image = read_entry(archive, page.image, budget, max_bytes=limits.max_image_bytes, what="image")
                tiff.add(image, page.image.filename, (page.read.width, page.read.height))
                pages += 1
            tiff.close()
    return pages


def outcome(data: bytes) -> str:
    try:
        unpack(data)
    except AppError as error:
        assert 400 <= error.status < 500, f"{error.code}: {error.message}"
        return error.code.value
    return "OK"


def with_raw_name(files: dict[str, bytes], placeholder: str, raw: bytes) -> bytes:
    """A ZIP whose entry named ``placeholder`` carries ``raw`` (same length) as its name in both headers."""
    assert len(placeholder.encode()) == len(raw)
    return zip_of(files).replace(placeholder.encode(), raw)


@pytest.mark.parametrize(
    "name",
    ["../evil.xml", "Brief/../../evil.xml", "/etc/evil.xml", "C:/evil.xml", "C:evil.xml", "a\\..\\..\\evil.xml"],
)
def test_entries_that_leave_the_zip_are_refused(actors: Actors, name: str) -> None:
    refused(actors.client, actors.archivist, zip_of({**VALID, name: b"<x/>"}), "IMPORT_UNSAFE_ARCHIVE")


def test_a_name_with_a_nul_is_judged_by_its_part_before_it(actors: Actors) -> None:
    # zipfile cuts a name at its NUL (as C code would): what is left is checked like any name.
    data = with_raw_name({**VALID, "Brief/XXXevil.xml": b"<x/>"}, "Brief/XXXevil.xml", b"Brief/..\x00evil.xml")
    refused(actors.client, actors.archivist, data, "IMPORT_UNSAFE_ARCHIVE")


def test_a_symlink_entry_is_refused(actors: Actors) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in VALID.items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("Brief/page/0002.xml")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    refused(actors.client, actors.archivist, out.getvalue(), "IMPORT_UNSAFE_ARCHIVE")


def test_bombs_and_floods_are_bounded(app_factory: AppFactory) -> None:
    client = app_factory(import_max_unpacked_bytes=1024 * 1024, import_max_entries=20, import_max_xml_bytes=64 * 1024)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = bearer(client, "erika")
    bomb = zip_of({**VALID, "Brief/page/0002.xml": b" " * (5 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    refused(client, headers, bomb, "IMPORT_UNSAFE_ARCHIVE")
    flood = zip_of({**VALID, **{f"Brief/x{n}.txt": b"" for n in range(30)}})
    refused(client, headers, flood, "IMPORT_UNSAFE_ARCHIVE")
    big_xml = transkribus_page(PAGE).replace(b"<Page ", b"<!--" + b"x" * 100_000 + b"--><Page ")
    refused(client, headers, zip_of({**VALID, "Brief/page/0001.xml": big_xml}), "IMPORT_UNSAFE_ARCHIVE")


def test_headers_that_understate_the_size_are_refused(actors: Actors) -> None:
    data = bytearray(zip_of({**VALID, "Brief/page/0002.xml": b" " * (2 * 1024 * 1024)}))
    # The second XML's sizes rewritten to 10 bytes in its local header and the central directory.
    name = b"Brief/page/0002.xml"
    for at in range(len(data)):
        if data[at : at + 4] == b"PK\x03\x04" and data[at + 30 : at + 30 + len(name)] == name:
            struct.pack_into("<I", data, at + 22, 10)
        if data[at : at + 4] == b"PK\x01\x02" and data[at + 46 : at + 46 + len(name)] == name:
            struct.pack_into("<I", data, at + 24, 10)
    refused(actors.client, actors.archivist, bytes(data), "IMPORT_NOT_A_ZIP")


def test_a_nested_zip_is_not_unpacked(actors: Actors) -> None:
    refused(actors.client, actors.archivist, zip_of({"inner.zip": zip_of(VALID)}), "IMPORT_NOTHING_FOUND")


@pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 100, b"%PDF-1.7\n"])
def test_what_is_not_a_zip_is_refused(actors: Actors, data: bytes) -> None:
    refused(actors.client, actors.archivist, data, "IMPORT_NOT_A_ZIP")


def test_an_upload_over_the_limit_is_cut_off(app_factory: AppFactory) -> None:
    client = app_factory(import_max_bytes=4096)
    add_user(client, "erika", Role.ARCHIVIST)
    refused(client, bearer(client, "erika"), zip_of(VALID) + b"\0" * 200_000, "IMPORT_TOO_LARGE", 413)


DECLARATIONS = {
    "internal entity": '<!DOCTYPE PcGts [<!ENTITY who "Anna">]>',
    "external entity": f'<!DOCTYPE PcGts [<!ENTITY who SYSTEM "file:///tmp/{SECRET}">]>',
    "external DTD": '<!DOCTYPE PcGts SYSTEM "http://127.0.0.1:9/page.dtd">',
    "public id": '<!DOCTYPE PcGts PUBLIC "-//X//DTD X//EN" "page.dtd">',
    "parameter entity": "<!DOCTYPE PcGts [<!ENTITY % p \"<!ENTITY who 'x'>\"> %p;]>",
    "billion laughs": '<!DOCTYPE PcGts [<!ENTITY l0 "ha">'
    + "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    + "]>",
}
ENCODINGS = [("UTF-8", "utf-8", b""), ("UTF-16", "utf-16-le", codecs.BOM_UTF16_LE), ("UTF-16BE", "utf-16-be", b"")]


@pytest.mark.parametrize("declaration", DECLARATIONS, ids=list(DECLARATIONS))
@pytest.mark.parametrize("encoding", ENCODINGS, ids=[e[1] for e in ENCODINGS])
def test_dtds_and_entities_are_refused_in_every_encoding(
    actors: Actors, declaration: str, encoding: tuple[str, str, bytes]
) -> None:
    declared, codec, bom = encoding
    body = transkribus_page(PAGE).decode().split("\n", 1)[1].replace("<Unicode>", "<Unicode>&who;", 1)
    xml = bom + f'<?xml version="1.0" encoding="{declared}"?>\n{DECLARATIONS[declaration]}\n{body}'.encode(codec)
    message = refused(
        actors.client, actors.archivist, zip_of({**VALID, "Brief/page/0001.xml": xml}), "IMPORT_INVALID_XML"
    )
    assert SECRET not in message


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        (b"<PcGts><Page", "IMPORT_INVALID_XML"),
        (b'<?xml version="1.0"?><TEI xmlns="http://www.tei-c.org/ns/1.0"/>', "IMPORT_INVALID_XML"),
        (transkribus_page(PAGE).replace(b'<Baseline points="', b'<Baseline points="a,b ', 1), "IMPORT_INVALID_XML"),
        (transkribus_page(PAGE).replace(b'<Baseline points="', b'<Baseline points="1e400,3 ', 1), "IMPORT_INVALID_XML"),
        (kraken_alto(PAGE).replace(b">pixel<", b">furlong<"), "IMPORT_INVALID_XML"),
        (
            kraken_alto(PAGE).replace(b">pixel<", b">mm10<").replace(b' WIDTH="600" HEIGHT="400" PHYS', b" PHYS"),
            "IMPORT_INVALID_XML",
        ),
        (transkribus_page(PAGE, image_name="../../../etc/passwd"), "IMPORT_IMAGE_MISSING"),
        (transkribus_page(PAGE, image_name="nowhere.png"), "IMPORT_IMAGE_MISSING"),
    ],
    ids=[
        "not well-formed",
        "neither PAGE nor ALTO",
        "not a number",
        "no coordinate",
        "unknown unit",
        "mm10 without page size",
        "image outside",
        "image missing",
    ],
)
def test_bad_files_are_refused_clearly(actors: Actors, xml: bytes, code: str) -> None:
    files = {"Brief/0001.png": image_bytes(PAGE), "Brief/page/0001.xml": xml}
    refused(actors.client, actors.archivist, zip_of(files), code)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels and holds almost nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("image", [png_claiming(100_000, 100_000), png_claiming(70_000, 1), b"\x89PNG\r\n\x1a\nbroken"])
def test_image_bombs_and_damaged_images_are_refused(actors: Actors, image: bytes) -> None:
    files = {**VALID, "Brief/0001.png": image}
    refused(actors.client, actors.archivist, zip_of(files), "IMPORT_IMAGE_INVALID")


def test_nothing_to_import(actors: Actors) -> None:
    files = {"README.txt": b"hallo", "Brief/0001.png": image_bytes(PAGE), "Brief/mets.xml": b"<mets/>"}
    refused(actors.client, actors.archivist, zip_of(files), "IMPORT_NOTHING_FOUND")


def test_pages_and_lines_are_bounded(app_factory: AppFactory) -> None:
    client = app_factory(max_pages=1, import_max_lines_per_page=1)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = bearer(client, "erika")
    refused(client, headers, zip_of(VALID), "IMPORT_INVALID_XML")
    one = gen_page(202, "a.png", lines=1)
    two = gen_page(203, "b.png", lines=1)
    files = {
        "a.png": image_bytes(one),
        "a.xml": transkribus_page(one),
        "b.png": image_bytes(two),
        "b.xml": transkribus_page(two),
    }
    refused(client, headers, zip_of(files), "TOO_MANY_PAGES", 413)


def test_the_points_of_all_pages_together_are_bounded(app_factory: AppFactory) -> None:
    """Every page's lines stay in memory until the last file is read: coordinates (a 40 KB
    deflated PAGE file of dense polygons is 460 MB of points) are bounded for the whole ZIP."""
    client = app_factory(import_max_points=41)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = bearer(client, "erika")
    files: dict[str, bytes] = {}
    for n in range(3):
        page = gen_page(210 + n, "0001.png", lines=2)  # 2 lines of 3 + 4 points: 14 a page
        files[f"Brief {n}/0001.png"] = image_bytes(page)
        files[f"Brief {n}/page/0001.xml"] = transkribus_page(page)
    message = refused(client, headers, zip_of(files), "IMPORT_UNSAFE_ARCHIVE")
    assert "41" in message
    one = {name: data for name, data in files.items() if name.startswith("Brief 0/")}
    assert post(client, headers, zip_of(one)).status_code == 201


# --- generated: names and bytes -----------------------------------------------------------------

_PIECES = [
    "..",
    ".",
    "",
    "/",
    "\\",
    "C:",
    "a",
    "Brief",
    "page",
    "0001.png",
    "0001.xml",
    "x.xml",
    "Ä",
    "A\u0308",
    "__MACOSX",
    "._x",
    " ",
    "%2e%2e",
    "\u202e",
    "ſ",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=5), min_size=1, max_size=4))
def test_any_entry_names_give_documents_or_a_clear_refusal(names: list[list[str]]) -> None:
    files = dict(VALID)
    for pieces in names:
        name = "/".join(pieces)
        files.setdefault(name, transkribus_page(PAGE) if name.endswith(".xml") else image_bytes(PAGE))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    assert outcome(out.getvalue()) in {
        "OK",
        "IMPORT_UNSAFE_ARCHIVE",
        "IMPORT_NOT_A_ZIP",
        "IMPORT_INVALID_XML",
        "IMPORT_IMAGE_MISSING",
        "IMPORT_IMAGE_INVALID",
        "IMPORT_NOTHING_FOUND",
    }


@pytest.mark.parametrize("seed", range(3))
def test_mutated_zips_give_documents_or_a_clear_refusal(seed: int) -> None:
    data = zip_of(
        {
            **VALID,
            "Brief/alto/0002.xml": kraken_alto(gen_page(204, "0002.png")),
            "Brief/0002.png": image_bytes(gen_page(204, "0002.png")),
        }
    )
    assert unpack(data) == 2
    codes = {outcome(variant) for _, variant in mutated(data, seed, 60)}
    assert codes - {"OK"}, "no mutation was refused: the fuzzing did nothing"


def test_a_zip_of_more_documents_than_open_files_allowed_is_imported(actors: Actors) -> None:
    """Each document's original used to stay open (a temporary file) until the last was built:
    a ZIP of many small documents ran the process out of file descriptors (a 500 for everyone)."""
    files: dict[str, bytes] = {}
    for n in range(60):
        page = gen_page(300 + n, "0001.png", lines=1, width=40, height=30)
        files[f"Brief {n:02d}/0001.png"] = image_bytes(page)
        files[f"Brief {n:02d}/page/0001.xml"] = transkribus_page(page)
    data = zip_of(files)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 40, hard))
    try:
        response = post(actors.client, actors.archivist, data)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert response.status_code == 201, response.text
    assert len(response.json()["documents"]) == 60


@pytest.mark.parametrize("other", ["Brief/0001.PNG", "brief/0001.png"])
def test_two_entries_one_name_apart_only_in_case_are_refused(actors: Actors, other: str) -> None:
    """A user's Windows or macOS shows them as one file: which image the page names is
    ambiguous, and the one found last used to be taken silently (another page's picture)."""
    decoy = gen_page(220, "0001.png", lines=2, width=300, height=200)
    files = {**VALID, other: image_bytes(decoy)}
    message = refused(actors.client, actors.archivist, zip_of(files), "IMPORT_UNSAFE_ARCHIVE")
    assert "twice" in message


# --- text and page sizes in the files ----------------------------------------------------------


def _one_line_page(text: str, width: str = "600", height: str = "400") -> bytes:
    """A PAGE file of one placed line holding ``text`` (escaped as XML)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    return (
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">'
        f'<Page imageFilename="p.png" imageWidth="{width}" imageHeight="{height}"><TextRegion id="r1">'
        '<TextLine id="l1"><Coords points="10,10 300,10 300,40 10,40"/><Baseline points="10,35 300,35"/>'
        f"<TextEquiv><Unicode>{escaped}</Unicode></TextEquiv></TextLine></TextRegion></Page></PcGts>"
    ).encode()


# Each import its own image (the same pages twice are a duplicate, 409).
_IMAGES = itertools.count(1000)


def _with_line(text: str, **size: str) -> bytes:
    image = image_bytes(gen_page(next(_IMAGES), "p.png", lines=1))
    return zip_of({"p.png": image, "p.xml": _one_line_page(text, **size)})


def test_a_line_longer_than_a_correction_may_be_is_refused_naming_it(actors: Actors) -> None:
    """8 MB of one letter deflates to a few KB: a line holds at most what a correction may (5000)."""
    message = refused(actors.client, actors.archivist, _with_line("A" * 5001), "IMPORT_INVALID_XML")
    assert "p.xml" in message and "line 1" in message and "5000" in message
    response = post(actors.client, actors.archivist, _with_line("A" * 5000))
    assert response.status_code == 201, response.text


def test_the_text_of_all_pages_together_is_bounded(app_factory: AppFactory) -> None:
    client = app_factory(import_max_text_chars=100)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = bearer(client, "erika")
    files: dict[str, bytes] = {}
    for n in range(3):
        files[f"Brief {n}/p.png"] = image_bytes(gen_page(221 + n, "p.png", lines=1))
        files[f"Brief {n}/p.xml"] = _one_line_page("B" * 40)
    message = refused(client, headers, zip_of(files), "IMPORT_UNSAFE_ARCHIVE")
    assert "100" in message
    two = {name: data for name, data in files.items() if not name.startswith("Brief 2/")}
    assert post(client, headers, zip_of(two)).status_code == 201


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.sampled_from(["1e-300", "1e-320", "0.5", "0.999", "-3", "0", "1", "1e7", "nan", "inf", "", "x", "5e-324"]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    ),
    st.sampled_from(["400", "1e-300", "0.01"]),
)
def test_any_declared_page_size_gives_a_document_or_a_clear_refusal(actors: Actors, width: str, height: str) -> None:
    """The page's declared size divides every coordinate: 1e-300 made them infinite (a 500)."""
    response = post(actors.client, actors.archivist, _with_line("Liebe Mutter", width=width, height=height))
    if _a_page_size(width) and _a_page_size(height):
        assert response.status_code == 201, response.text
        return
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "IMPORT_INVALID_XML", response.text


def _a_page_size(raw: str) -> bool:
    """What a page size may be: none (empty, 0), or a finite number from 1 to the coordinates' 1e7."""
    if not raw.strip():
        return True
    if not re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", raw.strip()):
        return False
    value = float(raw)
    return value == 0 or 1 <= value <= 1e7
