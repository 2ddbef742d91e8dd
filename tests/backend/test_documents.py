"""Uploads (sniffed, bounded, checksummed, stored under our own keys), listing, reading, the trash."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.storage import KEY, InvalidKeyError, LocalStorage
from backend.storage_s3 import S3Storage
from backend.users.models import Role
from tests.backend.conftest import BOTH_STORES, Actors, AppFactory, FakeClock, add_user, bearer, services_of
from tests.backend.documents import KINDS, make_document
from tests.backend.s3_standin import MotoS3, free_port, stored_keys


def upload(
    actors: Actors, content: bytes, title: str = "Brief", filename: str = "scan.bin", **fields: str
) -> tuple[int, dict]:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": (filename, content, "application/octet-stream")},
        data={"title": title, **fields},
    )
    return response.status_code, response.json()


def stored_files(actors: Actors) -> list[str]:
    """The keys of every object in the app's store, read from the folder or the bucket itself."""
    settings = services_of(actors.client).settings
    if settings.storage == "s3":
        storage = services_of(actors.client).documents.storage
        assert isinstance(storage, S3Storage)
        listed = storage.client.list_objects_v2(Bucket=settings.s3_bucket).get("Contents", [])
        return stored_keys({o["Key"]: b"" for o in listed}, settings.s3_prefix)
    root = settings.storage_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".staging" not in p.parts)


@pytest.mark.parametrize(
    ("kind", "pages", "storage_kind"),
    [(k, 1, "local") for k in KINDS] + [("pdf", 3, "local"), ("tiff", 4, "local"), ("pdf", 3, "s3"), ("jpeg", 1, "s3")],
    indirect=["storage_kind"],
)
def test_an_upload_is_sniffed_counted_hashed_and_stored(actors: Actors, kind: str, pages: int) -> None:
    content = make_document(kind, seed=7, pages=pages)
    status, body = upload(actors, content, filename="letter.pdf", writer="Anna Müller", date="1916-05")
    assert status == 201, body
    assert (body["mediaType"], body["pageCount"], body["sizeBytes"]) == (KINDS[kind], pages, len(content))
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert (body["writer"]["slug"], body["date"], body["status"]) == ("anna-mueller", "1916-05", "NEW")
    services = services_of(actors.client)
    with services.db.sessions() as session:
        document = services.documents.get(session, body["id"])
        assert KEY.fullmatch(document.storage_key)
        with services.documents.storage.open(document.storage_key) as original:
            assert original.read() == content
    assert stored_files(actors) == [document.storage_key]
    assert actors.client.get(f"/api/documents/{body['id']}", headers=actors.admin).json() == body


@pytest.mark.parametrize("title", ["ß" * 500, "ﬁ" * 500, "ΐ" * 500, "Straße " * 71 + "ß"])
def test_a_title_that_casefolds_longer_than_the_column_is_stored_and_filtered_by(actors: Actors, title: str) -> None:
    status, body = upload(actors, make_document("pdf", seed=8, pages=1), title=title)
    assert status == 201, body
    assert body["title"] == title
    found = actors.client.get("/api/documents", params={"title": title[:20]}, headers=actors.archivist).json()
    assert [item["id"] for item in found["items"]] == [body["id"]]


@pytest.mark.parametrize(
    ("content", "code", "storage_kind"),
    [
        (b"", "EMPTY_DOCUMENT", "local"),
        (b"hello, this is text", "UNSUPPORTED_DOCUMENT_TYPE", "local"),
        (b"PK\x03\x04" + b"\x00" * 40, "UNSUPPORTED_DOCUMENT_TYPE", "local"),
        (b"GIF89a" + b"\x00" * 40, "UNSUPPORTED_DOCUMENT_TYPE", "local"),
        (b"%PDF-1.7\nnot really a pdf", "CORRUPT_DOCUMENT", "local"),
        (b"%PDF-1.7\nnot really a pdf", "CORRUPT_DOCUMENT", "s3"),
        (make_document("png", 1)[:40], "CORRUPT_DOCUMENT", "local"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 garbage", "CORRUPT_DOCUMENT", "local"),
    ],
    indirect=["storage_kind"],
)
def test_a_bad_file_is_refused_with_a_code_and_nothing_is_stored(actors: Actors, content: bytes, code: str) -> None:
    status, body = upload(actors, content)
    assert (status // 100, body["code"]) == (4, code)
    assert stored_files(actors) == []


@pytest.mark.parametrize("seed", range(12))
def test_mutated_files_are_stored_or_refused_with_a_code_never_a_500(actors: Actors, seed: int) -> None:
    rng = random.Random(seed)
    kind = rng.choice(list(KINDS))
    content = bytearray(make_document(kind, seed, pages=rng.randint(1, 3)))
    for _ in range(rng.randint(1, 8)):
        content[rng.randrange(len(content))] = rng.randrange(256)
    if rng.random() < 0.5:
        del content[rng.randrange(1, len(content)) :]
    status, body = upload(actors, bytes(content))
    assert status == 201 or (status // 100 == 4 and body["code"])
    assert len(stored_files(actors)) == (1 if status == 201 else 0)


@BOTH_STORES
def test_the_same_file_twice_is_reported_with_the_existing_document(actors: Actors) -> None:
    content = make_document("png", 3)
    _, first = upload(actors, content, title="Erster")
    status, body = upload(actors, content, title="Zweiter", filename="other.png")
    assert (status, body["code"], body["details"]["documentId"]) == (409, "DUPLICATE_DOCUMENT", first["id"])
    assert actors.client.delete(f"/api/documents/{first['id']}", headers=actors.archivist).status_code == 204
    status, body = upload(actors, content)
    assert (status, body["details"]["inTrash"]) == (409, True)
    assert len(stored_files(actors)) == 1


def test_too_many_pages_is_a_413(app_factory: AppFactory) -> None:
    client = app_factory(max_pages=3)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    for kind in ("pdf", "tiff"):
        assert upload(actors, make_document(kind, 1, pages=3))[0] == 201
        status, body = upload(actors, make_document(kind, 2, pages=4))
        assert (status, body["code"]) == (413, "TOO_MANY_PAGES")


def _multipart_chunks(content_size: int) -> Iterator[bytes]:
    yield b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nBig\r\n'
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.pdf"\r\n\r\n%PDF-'
    for _ in range(content_size // 65536):
        yield b"\x00" * 65536
    yield b"\r\n--b--\r\n"


def test_an_oversized_upload_is_cut_off_with_or_without_a_declared_length(app_factory: AppFactory) -> None:
    client = app_factory(max_upload_bytes=200_000)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = {**bearer(client, "erika"), "Content-Type": "multipart/form-data; boundary=b"}
    chunked = client.post("/api/documents", headers=headers, content=_multipart_chunks(2_000_000))
    assert (chunked.status_code, chunked.json()["code"]) == (413, "DOCUMENT_TOO_LARGE")
    declared = client.post("/api/documents", headers={**headers, "Content-Length": "99999999"}, content=b"--b--")
    assert (declared.status_code, declared.json()["code"]) == (413, "DOCUMENT_TOO_LARGE")


@BOTH_STORES
def test_storage_keys_never_come_from_the_file_name(actors: Actors) -> None:
    for seed, filename in enumerate(["../../../etc/passwd.png", "..\\..\\boot.ini", "/originals/" + "0" * 32]):
        status, body = upload(actors, make_document("png", 5 + seed), filename=filename)
        assert status == 201
        assert body["originalFilename"] == filename.replace("\\", "/").rsplit("/", 1)[-1]
    stored = stored_files(actors)
    assert len(stored) == 3 and all(KEY.fullmatch(key) and key.startswith("originals/") for key in stored)


@given(st.text(max_size=60))
def test_storage_refuses_every_key_not_of_its_own_shape(tmp_path_factory: pytest.TempPathFactory, key: str) -> None:
    storage = LocalStorage(tmp_path_factory.getbasetemp() / "keys")
    if KEY.fullmatch(key):
        assert storage.exists(key) is False
    else:
        with pytest.raises(InvalidKeyError):
            storage.open(key)


def test_the_writer_slug_is_made_once_and_shared_by_spellings(actors: Actors) -> None:
    _, first = upload(actors, make_document("png", 10), writer="Anna Müller")
    _, second = upload(actors, make_document("png", 11), writer="anna  MUELLER")
    assert first["writer"] == second["writer"]
    assert first["writer"]["name"] == "Anna Müller"


def test_list_filters_match_a_plain_filter_of_all_documents(actors: Actors) -> None:
    rng = random.Random(4)
    writers, titles = ["Anna Müller", "Karl Weber", "Ülla Öz"], ["Brief an Mutter", "Überweisung", "Feldpost 100%"]
    made = []
    for seed in range(18):
        when = f"19{rng.randint(10, 20)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        status, body = upload(
            actors, make_document("png", 100 + seed), title=rng.choice(titles), writer=rng.choice(writers), date=when
        )
        assert status == 201
        made.append(body)
    cases = [
        {"writer": "karl-weber"},
        {"title": "ÜBER"},
        {"title": "100%"},
        {"title": "_"},
        {"dateFrom": "1914-01-01", "dateTo": "1916-12-31"},
        {"status": "NEW", "writer": "ulla-oz"},
        {"status": "DONE"},
    ]
    for query in cases:
        expected = [
            d["id"]
            for d in sorted(made, key=lambda d: -d["id"])
            if ("writer" not in query or d["writer"]["slug"] == query["writer"])
            and ("title" not in query or query["title"].casefold() in d["title"].casefold())
            and ("dateFrom" not in query or d["date"] >= query["dateFrom"])
            and ("dateTo" not in query or d["date"] <= query["dateTo"])
            and ("status" not in query or d["status"] == query["status"])
        ]
        got = actors.client.get("/api/documents", headers=actors.archivist, params={**query, "limit": 200}).json()
        assert [d["id"] for d in got["items"]] == expected, query


def test_a_listed_document_reads_as_the_document_read_alone(actors: Actors) -> None:
    # The list reads plain rows, the single read an ORM object: the answers must not drift apart.
    variants = [
        {"writer": "Anna Müller", "date": "1915"},
        {"writer": "Karl Weber", "date": "1916-03"},
        {"date": "1917-04-05"},
        {},
    ]
    for seed, fields in enumerate(variants):
        assert upload(actors, make_document("png", 500 + seed), **fields)[0] == 201
    listed = actors.client.get("/api/documents", headers=actors.archivist).json()["items"]
    assert len(listed) == len(variants)
    for item in listed:
        assert item == actors.client.get(f"/api/documents/{item['id']}", headers=actors.archivist).json()


def test_keyset_pages_list_every_document_once_while_uploads_go_on(actors: Actors) -> None:
    ids = [upload(actors, make_document("png", 300 + n))[1]["id"] for n in range(11)]
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = actors.client.get("/api/documents", headers=actors.archivist, params=params).json()
        seen += [d["id"] for d in page["items"]]
        upload(actors, make_document("png", 400 + len(seen)))  # newer documents do not shift the pages
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def test_trash_hides_a_document_until_an_admin_restores_it(actors: Actors) -> None:
    _, body = upload(actors, make_document("pdf", 20, pages=2))
    url = f"/api/documents/{body['id']}"
    assert actors.client.delete(url, headers=actors.archivist).status_code == 204
    assert actors.client.get(url, headers=actors.archivist).json()["code"] == "DOCUMENT_NOT_FOUND"
    assert actors.client.get("/api/documents", headers=actors.archivist).json()["items"] == []
    assert actors.client.get("/api/trash", headers=actors.archivist).json()["code"] == "FORBIDDEN"
    trash = actors.client.get("/api/trash", headers=actors.admin).json()
    assert [d["id"] for d in trash] == [body["id"]]
    assert trash[0]["purgeAt"].startswith("2026-01-31")
    restored = actors.client.post(f"/api/trash/{body['id']}/restore", headers=actors.admin)
    assert restored.status_code == 200 and restored.json()["deletedAt"] is None
    again = actors.client.post(f"/api/trash/{body['id']}/restore", headers=actors.admin)
    assert (again.status_code, again.json()["code"]) == (409, "NOT_IN_TRASH")
    assert actors.client.get(url, headers=actors.archivist).status_code == 200


@BOTH_STORES
def test_after_the_trash_period_a_document_cannot_be_restored_and_is_purged_at_start(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    _, body = upload(actors, make_document("png", 21))
    actors.client.delete(f"/api/documents/{body['id']}", headers=actors.archivist)
    clock.advance(30 * 86400 - 1)
    admin = bearer(actors.client, "admin")
    assert len(actors.client.get("/api/trash", headers=admin).json()) == 1
    clock.advance(1)
    expired = actors.client.post(f"/api/trash/{body['id']}/restore", headers=admin)
    assert (expired.status_code, expired.json()["code"]) == (410, "TRASH_EXPIRED")
    assert len(stored_files(actors)) == 1
    restarted = app_factory(clock=clock)  # start-up purges what is past the trash period
    assert stored_files(actors) == []
    assert restarted.get("/api/trash", headers=admin).json() == []


def test_partial_dates_keep_their_precision(actors: Actors) -> None:
    for seed, given_date in enumerate(["1916", "1916-05", "1916-05-03"]):
        _, body = upload(actors, make_document("png", 30 + seed), date=given_date)
        assert body["date"] == given_date
    status, body = upload(actors, make_document("png", 40), date="1916-02-30")
    assert (status, body["code"]) == (422, "INVALID_REQUEST")
    assert date(1916, 1, 1).isoformat() == "1916-01-01"


def test_an_upload_while_the_store_is_down_is_a_503_and_records_nothing(
    app_factory: AppFactory, moto_s3: MotoS3
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = app_factory(**moto_s3.settings("archive", s3_endpoint_url=dead, s3_max_attempts=1))
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    response = client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("scan.png", make_document("png", 60), "application/octet-stream")},
        data={"title": "Brief"},
    )
    assert (response.status_code, response.json()["code"]) == (503, "STORAGE_UNAVAILABLE")
    assert response.headers["Retry-After"] == "30" and dead not in response.text
    assert client.get("/api/documents", headers=actors.archivist).json()["items"] == []


def test_start_up_stops_with_the_setting_to_fix_when_the_bucket_is_missing(
    moto_s3: MotoS3, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.__main__ import main

    values = moto_s3.settings("no-such-bucket", s3_secret_access_key="hunter2-secret")
    for name, value in {**values, "database_url": database_url, "argon2_time_cost": 1}.items():
        monkeypatch.setenv(f"APP_{name.upper()}", str(value))
    assert main([]) == 2
    error = capsys.readouterr().err
    assert "APP_S3_BUCKET: there is no bucket 'no-such-bucket'" in error and "hunter2" not in error
    monkeypatch.setenv("APP_S3_BUCKET", "No_Such_Bucket")
    assert main([]) == 2
    assert "s3_bucket" in capsys.readouterr().err


@pytest.mark.parametrize("storage_kind", ["s3"], indirect=True)
def test_a_store_down_at_start_leaves_the_original_but_purges_the_trash_and_starts(
    actors: Actors, app_factory: AppFactory, clock: FakeClock, moto_s3: MotoS3, caplog: pytest.LogCaptureFixture
) -> None:
    _, body = upload(actors, make_document("png", 22))
    actors.client.delete(f"/api/documents/{body['id']}", headers=actors.archivist)
    bucket = services_of(actors.client).settings.s3_bucket
    assert bucket is not None
    clock.advance(30 * 86400)
    restarted = app_factory(clock=clock, s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_max_attempts=1)
    assert restarted.get("/api/trash", headers=bearer(restarted, "admin")).json() == []
    assert len(moto_s3.objects(bucket)) == 1
    assert "is left in the store (delete it by hand)" in caplog.text
