"""The storage interface: the same tests against a local folder and against S3.

S3 is moto's S3 server in server mode on 127.0.0.1 (tests/backend/s3_standin.py), the
stand-in for MinIO that the issue allows on these machines: real HTTP, real boto3.
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backend.settings import Settings
from backend.storage import KEY, InvalidKeyError, LocalStorage, Storage, StorageUnavailableError, local_file
from backend.storage_s3 import S3Storage
from tests.backend.s3_standin import MotoS3, free_port

MIB = 1024 * 1024
FIXTURES = [HealthCheck.function_scoped_fixture]


def s3_storage(**overrides: Any) -> S3Storage:
    return S3Storage.from_settings(Settings(**overrides))


@pytest.fixture(scope="module", params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path_factory.mktemp("store"))
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    return s3_storage(**moto.settings(s3_prefix="archive/one"))


def content(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@contextmanager
def network_calls(store: Storage) -> Iterator[list[str]]:
    """Every HTTP request an S3 store sends while the block runs (none for a folder)."""
    sent: list[str] = []
    if not isinstance(store, S3Storage):
        yield sent
        return

    def record(request: Any, **_: Any) -> None:
        sent.append(f"{request.method} {request.url}")

    store.client.meta.events.register("before-send.s3", record)
    try:
        yield sent
    finally:
        store.client.meta.events.unregister("before-send.s3", record)


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES, derandomize=True, database=None)
@given(size=st.sampled_from([0, 1, 4095, MIB + 17, 3 * MIB]) | st.integers(0, 300_000), start=st.integers(0, 5000))
def test_what_is_saved_comes_back_from_the_position_the_source_was_at(store: Storage, size: int, start: int) -> None:
    data = content(size, seed=size)
    source = io.BytesIO(data)
    source.seek(min(start, size))
    key = store.save(source)
    assert KEY.fullmatch(key) and key.startswith("originals/")
    assert store.exists(key)
    with store.open(key) as stored:
        assert stored.read() == data[min(start, size) :]
    store.delete(key)
    assert not store.exists(key)


@dataclass(frozen=True)
class Stored:
    key: str
    data: bytes = field(repr=False)


@pytest.fixture(scope="module")
def big_object(store: Storage) -> Stored:
    data = content(2 * MIB + 12345, seed=9)
    return Stored(store.save(io.BytesIO(data)), data)


Operation = tuple[str, int, int]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(-1, 3 * MIB), st.just(0)),
        st.tuples(st.just("seek"), st.integers(0, 3 * MIB), st.just(io.SEEK_SET)),
        st.tuples(st.just("seek"), st.integers(-400_000, 400_000), st.just(io.SEEK_CUR)),
        st.tuples(st.just("seek"), st.integers(-3 * MIB, 0), st.just(io.SEEK_END)),
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES, derandomize=True, database=None)
@given(steps=operations)
def test_reads_and_seeks_on_an_opened_object_match_the_bytes(
    store: Storage, big_object: Stored, steps: list[Operation]
) -> None:
    key, data = big_object.key, big_object.data
    model = io.BytesIO(data)
    with store.open(key) as stored:
        assert stored.seekable() and stored.readable()
        for name, number, whence in steps:
            if name == "read":
                assert stored.read(number) == model.read(number)
            else:
                before = model.tell()
                target = {io.SEEK_SET: 0, io.SEEK_CUR: before, io.SEEK_END: len(data)}[whence] + number
                if target < 0:
                    with pytest.raises((ValueError, OSError)):  # a file says EINVAL, S3's reader ValueError
                        stored.seek(number, whence)
                    continue
                assert stored.seek(number, whence) == model.seek(number, whence)
            assert stored.tell() == model.tell()


def test_a_key_that_was_never_stored_is_missing_on_every_call(store: Storage) -> None:
    key = "originals/" + "0" * 32
    assert store.exists(key) is False
    with pytest.raises(FileNotFoundError):
        store.open(key)
    store.delete(key)  # nothing there: nothing happens


HOSTILE = [
    "",
    "originals/../x",
    "originals/../../etc/passwd",
    "/originals/" + "a" * 32,
    "originals/" + "a" * 32 + "/../" + "b" * 32,
    "originals/" + "A" * 32,
    "originals/" + "a" * 31,
    "originals/" + "a" * 32 + "\n",
    "originals\\" + "a" * 32,
    "pages/%2e%2e/" + "a" * 30,
    "other/" + "a" * 32,
    "originals/" + "a" * 32 + "?versionId=1",
]


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES, derandomize=True, database=None)
@given(key=st.sampled_from(HOSTILE) | st.text(max_size=70))
def test_a_key_not_of_the_storage_shape_is_refused_before_any_call(store: Storage, key: str) -> None:
    if KEY.fullmatch(key):
        return
    with network_calls(store) as sent:
        for call in (store.open, store.delete, store.exists):
            with pytest.raises(InvalidKeyError):
                call(key)
        with pytest.raises(InvalidKeyError):
            store.save(io.BytesIO(b"x"), kind=key)
    assert sent == []


def test_a_missing_or_unusable_folder_is_named_at_start(tmp_path: Path) -> None:
    LocalStorage(tmp_path / "new" / "store").check()  # made when missing
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageUnavailableError, match="APP_STORAGE_DIR"):
        LocalStorage(tmp_path / "file").check()


# --- S3 only: what a folder has no counterpart for -------------------------------------


class CountingReader(io.RawIOBase):
    """A source that records the size of every read asked of it."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.reads: list[int] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()

    def read(self, size: int | None = -1) -> bytes:
        self.reads.append(-1 if size is None else size)
        return self._data.read(size)


def test_a_big_original_goes_up_in_parts_never_read_whole(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    store = s3_storage(**moto_s3.settings(bucket, s3_part_size_mib=5))
    data = content(12 * MIB + 1, seed=3)
    source = CountingReader(data)
    key = store.save(source)  # type: ignore[arg-type]
    assert max(source.reads) <= 5 * MIB and -1 not in source.reads
    etag = moto_s3.client.head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload of three parts
    assert moto_s3.objects(bucket) == {key: data}
    assert moto_s3.multipart_uploads(bucket) == []


def test_a_multipart_upload_reads_only_a_few_parts_ahead_of_what_s3_has_taken(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    store = s3_storage(**moto_s3.settings(bucket, s3_part_size_mib=5))
    taken: list[int] = []
    ahead: list[int] = []

    def slow_part(**_: Any) -> None:
        time.sleep(0.05)  # a slow link: without a bound the reader would run far ahead of the uploads

    def part_done(**_: Any) -> None:
        taken.append(1)

    class Watched(CountingReader):
        def read(self, size: int | None = -1) -> bytes:
            ahead.append(len(self.reads) - len(taken))
            return super().read(size)

    store.client.meta.events.register("before-send.s3.UploadPart", slow_part)
    store.client.meta.events.register("after-call.s3.UploadPart", part_done)
    data = content(60 * MIB, seed=5)
    key = store.save(Watched(data))  # type: ignore[arg-type]
    assert len(taken) == 12 and max(ahead) <= 5  # four uploading, one being read
    assert moto_s3.client.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)


def test_an_upload_that_fails_midway_leaves_no_object_and_no_open_upload(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    store = s3_storage(**moto_s3.settings(bucket, s3_part_size_mib=5))

    class Breaking(CountingReader):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() >= 5 * MIB:
                raise OSError("the upload's temporary file broke")
            return super().read(size)

    with pytest.raises(OSError, match="temporary file broke"):
        store.save(Breaking(content(11 * MIB, seed=4)))  # type: ignore[arg-type]
    assert moto_s3.objects(bucket) == {}
    assert moto_s3.multipart_uploads(bucket) == []


def test_objects_live_under_the_prefix_and_a_reader_closes_its_body(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    store = s3_storage(**moto_s3.settings(bucket, s3_prefix="/family/archive/"))
    key = store.save(io.BytesIO(b"x" * 5000))
    assert list(moto_s3.objects(bucket)) == [f"family/archive/{key}"]
    reader: BinaryIO = store.open(key)
    assert reader.read(10) == b"x" * 10
    body = reader.raw._body  # type: ignore[attr-defined]
    reader.close()
    assert reader.raw._body is None and body._raw_stream.closed  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        reader.read(1)


def test_start_up_names_the_missing_bucket_refused_keys_and_a_dead_endpoint(moto_s3: MotoS3) -> None:
    s3_storage(**moto_s3.settings()).check()
    with pytest.raises(StorageUnavailableError, match="APP_S3_BUCKET: there is no bucket 'no-such-bucket'"):
        s3_storage(**moto_s3.settings("no-such-bucket")).check()
    refused = s3_storage(**moto_s3.settings(moto_s3.new_bucket(), s3_secret_access_key="wrong-secret"))
    with moto_s3.refused_keys(), pytest.raises(StorageUnavailableError, match="APP_S3_ACCESS_KEY_ID") as caught:
        refused.check()
    assert "wrong-secret" not in str(caught.value)
    dead = s3_storage(**moto_s3.settings("any-bucket", s3_endpoint_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(StorageUnavailableError, match="APP_S3_ENDPOINT_URL: nothing answers"):
        dead.check()


def test_a_dead_endpoint_at_run_time_is_retried_then_storage_unavailable(moto_s3: MotoS3) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    dead = s3_storage(**moto_s3.settings("any-bucket", s3_endpoint_url=endpoint, s3_max_attempts=3))
    key = "originals/" + "a" * 32
    calls: list[tuple[str, Any]] = [
        ("save", lambda: dead.save(io.BytesIO(b"x"))),
        ("open", lambda: dead.open(key)),
        ("exists", lambda: dead.exists(key)),
        ("delete", lambda: dead.delete(key)),
    ]
    for name, call in calls:
        with network_calls(dead) as sent, pytest.raises(StorageUnavailableError):
            call()
        assert len(sent) == 3, name  # APP_S3_MAX_ATTEMPTS: the first try and two retries


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"storage": "s3"}, "APP_S3_BUCKET must name the bucket"),
        ({"storage": "nfs"}, "storage"),
        ({"s3_endpoint_url": "minio:9000"}, "s3_endpoint_url"),
        ({"s3_endpoint_url": "ftp://minio:9000"}, "s3_endpoint_url"),
        ({"s3_endpoint_url": "http://key:secret@minio:9000"}, "s3_endpoint_url"),
        ({"s3_endpoint_url": "http:///bucket"}, "s3_endpoint_url"),
        ({"s3_region": "US East"}, "s3_region"),
        ({"s3_prefix": "a/../b"}, "s3_prefix"),
        ({"s3_prefix": "a//b"}, "s3_prefix"),
        ({"s3_prefix": "a b"}, "s3_prefix"),
        ({"s3_access_key_id": "only-the-id"}, "APP_S3_ACCESS_KEY_ID and APP_S3_SECRET_ACCESS_KEY"),
        ({"s3_part_size_mib": 4}, "s3_part_size_mib"),
        ({"s3_max_attempts": 0}, "s3_max_attempts"),
        ({"s3_connect_timeout_s": 0}, "s3_connect_timeout_s"),
    ],
)
def test_bad_s3_settings_are_refused_naming_the_setting(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**values)


BAD_BUCKETS = [
    "ab",
    "a" * 64,
    "Archive",
    "archive_1",
    "-archive",
    "archive-",
    "arch..ive",
    "arch.-ive",
    "192.168.1.10",
    "xn--archive",
    "archive-s3alias",
    "archive--ol-s3",
]


@pytest.mark.parametrize("name", BAD_BUCKETS)
def test_a_bucket_name_s3_would_refuse_is_refused_at_start(name: str) -> None:
    with pytest.raises(ValidationError, match="s3_bucket"):
        Settings(s3_bucket=name)


@settings(derandomize=True, database=None)
@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{1,40}|[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3})[a-z0-9]", fullmatch=True))
def test_bucket_names_of_the_rules_are_taken(name: str) -> None:
    if name.startswith(("xn--", "sthree-")) or name.endswith("-s3alias") or name.replace(".", "").isdigit():
        return
    assert Settings(s3_bucket=name).s3_bucket == name


def test_the_secret_key_never_shows_in_the_settings_or_a_start_up_error(moto_s3: MotoS3) -> None:
    values = moto_s3.settings("no-such-bucket", s3_secret_access_key="hunter2-very-secret")
    settings_ = Settings(**values)
    assert "hunter2" not in repr(settings_) and "hunter2" not in str(settings_.model_dump())
    with pytest.raises(StorageUnavailableError) as caught:
        S3Storage.from_settings(settings_).check()
    assert "hunter2" not in str(caught.value)


def test_the_secret_key_is_in_no_log_line_even_at_debug(moto_s3: MotoS3, caplog: pytest.LogCaptureFixture) -> None:
    moto_s3.client.create_bucket(Bucket="secret-bucket")
    caplog.set_level(logging.DEBUG)
    store = s3_storage(**moto_s3.settings("secret-bucket", s3_secret_access_key="hunter2-very-secret"))
    store.check()
    key = store.save(io.BytesIO(b"letter"))
    with store.open(key) as stored:
        assert stored.read() == b"letter"
    assert caplog.records and all("hunter2" not in record.getMessage() for record in caplog.records)


def test_local_file_is_the_folders_own_file_or_a_temporary_copy_gone_when_closed(store: Storage) -> None:
    data = content(MIB + 3, seed=11)
    key = store.save(io.BytesIO(data))
    with local_file(store, key) as on_disk:
        path = Path(on_disk.name)
        assert path.is_file() and path.read_bytes() == data and on_disk.read() == data
    assert path.exists() == isinstance(store, LocalStorage)  # the folder's file stays, a copy is deleted
    with pytest.raises(FileNotFoundError):
        local_file(store, "originals/" + "f" * 32)
