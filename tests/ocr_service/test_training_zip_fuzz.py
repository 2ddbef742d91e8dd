"""Seeded fuzzing of training ZIPs through unpacking and checking (no HTTP, no kraken).

Whatever is done to a valid ZIP — bits flipped in headers or data, truncation, methods and
sizes rewritten, names a file system cannot hold — the result is the data or an AppError
with a 4xx status, and a refused archive leaves nothing in the target folder.
"""

from __future__ import annotations

import io
import random
import warnings
import zipfile
from pathlib import Path

import pytest

from ocr_service.errors import AppError, ErrorCode
from ocr_service.training.archive import MAX_DEPTH, ArchiveLimits, extract_training_zip
from ocr_service.training.datasets import scan_training_data
from tests.support.training_data import line_set, page_set
from tests.support.zip_mutations import METHODS, build_zip, crafted_names, mutated, zip_of_names

LIMITS = ArchiveLimits(max_entries=200, max_unpacked_bytes=8 * 1024 * 1024)
VARIANTS_PER_METHOD = 120


def _base_files() -> dict[str, bytes]:
    # Line pairs and a small PAGE XML page: both ways the data is read are exercised.
    files = line_set(4, seed=11)
    files.update(page_set(1, seed=5, lines_per_page=2, width=600, height=300, font_size=24))
    return files


BASE_FILES = _base_files()


def unpack_and_scan(data: bytes, target: Path) -> AppError | None:
    """The outcome the service would see: None for usable data, else the AppError it raised."""
    try:
        extract_training_zip(io.BytesIO(data), target, LIMITS)
    except AppError as error:
        assert not target.exists(), "a refused archive must leave nothing behind"
        return error
    try:
        scan_training_data(target, "recognition")
    except AppError as error:
        return error
    return None


def check_variant(what: str, data: bytes, target: Path) -> AppError | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names it is asked to read
            error = unpack_and_scan(data, target)
    except AppError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what}: raised {type(exc).__name__}: {exc}") from exc
    if error is not None:
        assert 400 <= error.status < 500, f"{what}: {error.code} has status {error.status}"
    return error


@pytest.mark.parametrize("method", sorted(METHODS))
def test_mutated_zips_are_read_or_refused_with_a_4xx(tmp_path: Path, method: str) -> None:
    base = build_zip(BASE_FILES, METHODS[method])
    codes: set[str] = set()
    for n, (what, variant) in enumerate(mutated(base, seed=sum(map(ord, method)), count=VARIANTS_PER_METHOD)):
        error = check_variant(what, variant, tmp_path / f"v{n}")
        codes.add(error.code.value if error is not None else "OK")
    # The mutations reach the damaged-archive path, not only the parser of the directory.
    assert "INVALID_ARCHIVE" in codes


@pytest.mark.parametrize("method", ["deflate", "bzip2", "lzma"])
def test_a_corrupt_entry_stream_is_an_invalid_archive(tmp_path: Path, method: str) -> None:
    files = {"a.gt.txt": b"Grosse Worte " * 400}
    data = bytearray(build_zip(files, METHODS[method]))
    # Overwrite the middle of the compressed bytes: every decompressor fails in its own way.
    start = 30 + len("a.gt.txt")
    compressed = int.from_bytes(data[18:22], "little")
    for at in range(start + compressed // 3, start + 2 * compressed // 3):
        data[at] = 0x55
    with pytest.raises(AppError) as caught:
        extract_training_zip(io.BytesIO(bytes(data)), tmp_path / "data", LIMITS)
    assert caught.value.code == ErrorCode.INVALID_ARCHIVE
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_names_a_file_system_cannot_hold_are_refused_with_a_4xx(tmp_path: Path, method: str) -> None:
    rng = random.Random(7)
    for round_ in range(4):
        for n, (what, names) in enumerate(crafted_names(rng)):
            variant = zip_of_names([*BASE_FILES, *names], lambda name: BASE_FILES.get(name, b"Zeile"), METHODS[method])
            error = check_variant(f"round {round_} {what}: {names!r}", variant, tmp_path / f"r{round_}-{n}")
            assert error is not None, f"{what}: {names!r} was accepted"


@pytest.mark.parametrize(
    "names",
    [["p.xml", "p.xml/q.png"], ["p.xml/q.png", "p.xml"], ["a.png", "a.png"], ["Seite.png", "seite.PNG"]],
)
def test_a_file_and_a_folder_or_two_files_of_one_name_are_an_invalid_archive(tmp_path: Path, names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = zip_of_names(names, lambda name: b"x", zipfile.ZIP_DEFLATED)
    with pytest.raises(AppError) as caught:
        extract_training_zip(io.BytesIO(data), tmp_path / "data", LIMITS)
    assert caught.value.code == ErrorCode.INVALID_ARCHIVE
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", ["n" * 256 + ".png", "ü" * 128 + ".png", "/".join(["d" * 250] * 17) + "/a.png"])
def test_a_name_too_long_for_the_file_system_is_an_invalid_archive(tmp_path: Path, name: str) -> None:
    data = zip_of_names(["a.gt.txt", name], lambda n: b"x", zipfile.ZIP_STORED)
    with pytest.raises(AppError) as caught:
        extract_training_zip(io.BytesIO(data), tmp_path / "data", LIMITS)
    assert caught.value.code == ErrorCode.INVALID_ARCHIVE
    assert not (tmp_path / "data").exists()


def test_line_pairs_in_a_folder_named_like_the_line_folder_keep_their_texts(tmp_path: Path) -> None:
    # "A/" sorts before "_lines/": renaming its pairs into "_lines/" would overwrite these.
    ours = {name.replace("lines/l", "_lines/line0"): data for name, data in line_set(10, seed=4).items()}
    theirs = {name.replace("lines/", "A/"): data for name, data in line_set(10, seed=9).items()}
    files = {**ours, **theirs}
    text_of = {data: files[name[: -len(".png")] + ".gt.txt"] for name, data in files.items() if name.endswith(".png")}
    extract_training_zip(io.BytesIO(build_zip(files, zipfile.ZIP_DEFLATED)), tmp_path / "d", LIMITS)
    data = scan_training_data(tmp_path / "d", "recognition")
    assert data.lines == 20
    for image in data.files:
        assert image.with_name(image.stem + ".gt.txt").read_bytes() == text_of[image.read_bytes()]


@pytest.mark.parametrize("depth", [33, 34, 100, 1200, *random.Random(3).sample(range(35, 2000), 5)])
def test_a_path_deeper_than_the_limit_is_an_invalid_archive(tmp_path: Path, depth: int) -> None:
    # Under PATH_MAX, but mkdir and rmtree would recurse once per level (RecursionError: a 500).
    name = "a/" * (depth - 1) + "x.png"
    data = zip_of_names(["a.gt.txt", name], lambda n: b"x", zipfile.ZIP_STORED)
    with pytest.raises(AppError) as caught:
        extract_training_zip(io.BytesIO(data), tmp_path / "data", LIMITS)
    assert caught.value.code == ErrorCode.INVALID_ARCHIVE
    assert "folders deep" in caught.value.message
    assert not (tmp_path / "data").exists()


def test_a_path_at_the_depth_limit_is_unpacked(tmp_path: Path) -> None:
    name = "a/" * (MAX_DEPTH - 1) + "x.gt.txt"
    data = zip_of_names([name], lambda n: b"Zeile", zipfile.ZIP_DEFLATED)
    extract_training_zip(io.BytesIO(data), tmp_path / "data", LIMITS)
    assert (tmp_path / "data" / name).read_text() == "Zeile"


@pytest.mark.parametrize(("name", "size"), [("p.xml", 64 * 1024 * 1024 + 1), ("a.gt.txt", 1024 * 1024 + 1)])
def test_a_text_file_larger_than_training_data_can_be_is_refused(tmp_path: Path, name: str, size: int) -> None:
    # Deflated, a few KB; unpacked, read whole by the service itself. (A header that understates
    # the size is caught by the CRC: zipfile stops reading at the declared size.)
    data = zip_of_names(["p.png", name], lambda n: b"x" * (size if n == name else 10), zipfile.ZIP_DEFLATED)
    assert len(data) < 200_000
    with pytest.raises(AppError) as caught:
        extract_training_zip(io.BytesIO(data), tmp_path / "data", LIMITS)
    assert caught.value.code == ErrorCode.ARCHIVE_TOO_LARGE
    assert "training data is far smaller" in caught.value.message
    assert not (tmp_path / "data").exists()
