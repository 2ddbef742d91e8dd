"""Training logic without HTTP or kraken: checkpoints, ZIP safety, datasets, base choice, verdicts, jobs."""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from pathlib import Path

import pytest

from ocr_service.errors import AppError, ErrorCode
from ocr_service.training.archive import ArchiveLimits, extract_training_zip
from ocr_service.training.base_models import choose_segmentation_base
from ocr_service.training.checkpoints import best_checkpoint, parse_checkpoint_name
from ocr_service.training.datasets import scan_training_data
from ocr_service.training.jobs import EpochMetrics, Job, JobStatus, JobStore
from ocr_service.training.verdict import convergence_problem
from ocr_service.training.watchdog import Watchdog
from tests.support.training_data import line_set, make_zip, page_set, write_files

LIMITS = ArchiveLimits(max_entries=100, max_unpacked_bytes=10 * 1024 * 1024)


# --- checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("checkpoint_03-0.9512.ckpt", (3, 0.9512)),
        ("checkpoint_12-1.0000.ckpt", (12, 1.0)),
        ("checkpoint_100-0.0000.ckpt", (100, 0.0)),
        ("checkpoint_abort.ckpt", None),
        ("checkpoint_03-nan.ckpt", None),
        ("checkpoint_03-inf.ckpt", None),
        ("checkpoint_03-0.95.ckpt.tmp", None),
        ("checkpoint_03-0.9512.safetensors", None),
        ("best_0.9512.safetensors", None),
        ("checkpoint_x-0.9.ckpt", None),
        ("../checkpoint_03-0.9.ckpt", None),
    ],
)
def test_checkpoint_names_are_parsed_strictly(name: str, expected: tuple[int, float] | None) -> None:
    assert parse_checkpoint_name(name) == expected


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert best_checkpoint(tmp_path) is None
    assert best_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoint_abort.ckpt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert best_checkpoint(tmp_path) is None


def test_the_best_checkpoint_is_chosen_by_score_not_by_epoch(tmp_path: Path) -> None:
    for name in ("checkpoint_00-0.3000.ckpt", "checkpoint_04-0.9100.ckpt", "checkpoint_07-0.8800.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "checkpoint_abort.ckpt").write_bytes(b"x")
    best = best_checkpoint(tmp_path)
    assert best is not None
    assert best.path.name == "checkpoint_04-0.9100.ckpt"
    assert (best.epoch, best.score) == (4, 0.91)


def test_a_tie_keeps_the_earlier_epoch(tmp_path: Path) -> None:
    for name in ("checkpoint_02-0.5000.ckpt", "checkpoint_05-0.5000.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    best = best_checkpoint(tmp_path)
    assert best is not None and best.epoch == 2


def test_a_linked_checkpoint_is_never_chosen(tmp_path: Path) -> None:
    outside = tmp_path / "outside.ckpt"
    outside.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint_09-0.9900.ckpt").symlink_to(outside)
    (out / "checkpoint_01-0.4000.ckpt").write_bytes(b"x")
    best = best_checkpoint(out)
    assert best is not None and best.path.name == "checkpoint_01-0.4000.ckpt"


# --- ZIP safety -------------------------------------------------------------------------------
def zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    buffer.seek(0)
    return buffer


def refused(source: io.BytesIO, destination: Path, limits: ArchiveLimits = LIMITS) -> AppError:
    with pytest.raises(AppError) as caught:
        extract_training_zip(source, destination, limits)
    assert not destination.exists(), "nothing may be written when an archive is refused"
    return caught.value


def test_a_plain_zip_is_unpacked(tmp_path: Path) -> None:
    written = extract_training_zip(io.BytesIO(make_zip(line_set(3))), tmp_path / "data", LIMITS)
    assert len(written) == 6
    assert all(p.is_relative_to(tmp_path / "data") for p in written)


@pytest.mark.parametrize("name", ["/etc/cron.d/evil.txt", "../evil.txt", "lines/../../evil.txt", "C:/evil.txt"])
def test_paths_leaving_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    source = zip_with([("ok.txt", b"fine"), (name, b"evil")])
    error = refused(source, tmp_path / "data")
    assert error.code == ErrorCode.UNSAFE_ARCHIVE
    assert not (tmp_path / "evil.txt").exists()


def test_a_symlink_entry_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("lines/link.png")
    link.external_attr = (0o120777 << 16) | 0x20
    error = refused(zip_with([("a.txt", b"x"), (link, b"/etc/passwd")]), tmp_path / "data")
    assert error.code == ErrorCode.UNSAFE_ARCHIVE
    assert "link" in error.message


@pytest.mark.parametrize("name", ["model.ckpt", "weights/net.pt", "data.pkl", "base.mlmodel"])
def test_checkpoints_pickles_and_models_are_refused(tmp_path: Path, name: str) -> None:
    error = refused(zip_with([("a.gt.txt", b"x"), (name, b"\x80\x04K\x01.")]), tmp_path / "data")
    assert error.code == ErrorCode.UNSAFE_ARCHIVE


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [(f"l{i}.gt.txt", b"x") for i in range(11)]
    error = refused(zip_with(entries), tmp_path / "data", ArchiveLimits(10, 10**6))
    assert error.code == ErrorCode.ARCHIVE_TOO_LARGE


def test_a_directory_of_many_tiny_entries_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # zipfile builds ~550 bytes of objects per 47-byte entry before the entries can be counted.
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [(f"{i:x}", b"") for i in range(400)]
    error = refused(zip_with(entries), tmp_path / "data", ArchiveLimits(10, 10**6))
    assert error.code == ErrorCode.ARCHIVE_TOO_LARGE
    assert "directory" in error.message


def test_a_zip64_end_record_declaring_a_huge_directory_is_refused(tmp_path: Path) -> None:
    data = zip_with([("a.gt.txt", b"x")]).getvalue()
    end = data.rfind(b"PK\x05\x06")
    record = struct.pack("<4sqhhllqqqq", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, 2**40, 0)
    locator = struct.pack("<4slql", b"PK\x06\x07", 0, end, 1)
    error = refused(io.BytesIO(data[:end] + record + locator + data[end:]), tmp_path / "data")
    assert error.code == ErrorCode.ARCHIVE_TOO_LARGE


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.txt", b"\0" * (5 * 1024 * 1024))
    buffer.seek(0)
    assert len(buffer.getvalue()) < 50 * 1024
    error = refused(buffer, tmp_path / "data", ArchiveLimits(10, 1024 * 1024))
    assert error.code == ErrorCode.ARCHIVE_TOO_LARGE


def test_a_zip_whose_headers_understate_the_size_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.txt", b"\0" * (2 * 1024 * 1024))
    data = bytearray(buffer.getvalue())
    # Rewrite the uncompressed size in the local header and the central directory to 10 bytes.
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, 10)
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 10)
    error = refused(io.BytesIO(bytes(data)), tmp_path / "data", ArchiveLimits(10, 1024 * 1024))
    # zipfile stops at the declared size; the CRC of the bytes it read does not match
    assert error.code == ErrorCode.INVALID_ARCHIVE


def test_a_file_that_is_no_zip_is_refused(tmp_path: Path) -> None:
    error = refused(io.BytesIO(b"not a zip at all"), tmp_path / "data")
    assert error.code == ErrorCode.INVALID_ARCHIVE


# --- datasets ----------------------------------------------------------------------------------
def test_page_xml_and_alto_pages_are_found(tmp_path: Path) -> None:
    write_files(tmp_path, page_set(2, fmt="page", lines_per_page=5))
    write_files(tmp_path / "alto", page_set(1, seed=2, fmt="alto", lines_per_page=5))
    data = scan_training_data(tmp_path, "segmentation")
    assert (data.data_format, data.pages, data.lines) == ("xml", 3, 15)
    assert all(image.is_file() for image in data.page_images)


def test_line_images_are_renamed_without_inner_dots(tmp_path: Path) -> None:
    files = line_set(10)
    dotted = {name.replace("lines/l", "lines/a.b.l"): data for name, data in files.items()}
    write_files(tmp_path, dotted)
    data = scan_training_data(tmp_path, "recognition")
    assert data.data_format == "path" and data.lines == 10
    for image in data.files:
        assert image.name.count(".") == 1
        assert image.with_name(image.stem + ".gt.txt").read_text(encoding="utf-8").strip()


def test_mixed_pages_and_lines_are_refused(tmp_path: Path) -> None:
    write_files(tmp_path, {**page_set(2, lines_per_page=5), **line_set(10)})
    with pytest.raises(AppError) as caught:
        scan_training_data(tmp_path, "recognition")
    assert caught.value.code == ErrorCode.INVALID_TRAINING_DATA


def test_xml_naming_an_image_outside_the_zip_is_refused(tmp_path: Path) -> None:
    files = page_set(2)
    files["pages/page000.xml"] = files["pages/page000.xml"].replace(b"page000.png", b"../../etc/passwd")
    write_files(tmp_path / "data", files)
    with pytest.raises(AppError) as caught:
        scan_training_data(tmp_path / "data", "segmentation")
    assert "outside" in caught.value.message


def test_xml_with_entities_is_refused(tmp_path: Path) -> None:
    files = page_set(2)
    files["pages/page000.xml"] = files["pages/page000.xml"].replace(
        b"<PcGts", b'<!DOCTYPE x [<!ENTITY a "aaaa">]><PcGts', 1
    )
    write_files(tmp_path, files)
    with pytest.raises(AppError) as caught:
        scan_training_data(tmp_path, "segmentation")
    assert "DOCTYPE" in caught.value.message


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    write_files(tmp_path, line_set(3))
    with pytest.raises(AppError) as caught:
        scan_training_data(tmp_path, "recognition")
    assert caught.value.code == ErrorCode.INVALID_TRAINING_DATA
    assert "at least" in caught.value.message


def test_segmentation_needs_pages_not_lines(tmp_path: Path) -> None:
    write_files(tmp_path, line_set(20))
    with pytest.raises(AppError) as caught:
        scan_training_data(tmp_path, "segmentation")
    assert "PAGE XML or ALTO" in caught.value.message


# --- the 800-px rule ---------------------------------------------------------------------------
def test_a_base_of_the_training_height_is_fine_tuned(tmp_path: Path) -> None:
    decision = choose_segmentation_base(("seg", tmp_path / "seg.safetensors"), 800, lambda n, p: 800)
    assert decision.name == "seg" and decision.path == tmp_path / "seg.safetensors"
    assert "Fine-tuning" in decision.note


def test_a_base_of_another_height_means_training_from_scratch(tmp_path: Path) -> None:
    decision = choose_segmentation_base(("blla", tmp_path / "blla.mlmodel"), 800, lambda n, p: 1800)
    assert decision.name is None and decision.path is None
    assert "1800 px" in decision.note and "from scratch at 800 px" in decision.note


def test_no_base_means_training_from_scratch() -> None:
    decision = choose_segmentation_base(None, 800, lambda n, p: 800)
    assert decision.path is None and "800 px" in decision.note


def test_a_failing_height_check_is_logged_as_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ocr_service.engine.inspect import ModelFileError

    def broken(name: str, path: Path) -> int | None:
        raise ModelFileError("kraken cannot load seg.safetensors")

    with caplog.at_level(logging.WARNING, logger="ocr_service.training.base_models"):
        decision = choose_segmentation_base(("seg", tmp_path / "seg.safetensors"), 800, broken)
    assert decision.path is None
    assert "could not be read" in decision.note
    assert any(r.levelno == logging.WARNING and "cannot be read" in r.getMessage() for r in caplog.records)


def test_a_base_without_a_height_is_logged_as_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ocr_service.training.base_models"):
        decision = choose_segmentation_base(("seg", tmp_path / "s.safetensors"), 800, lambda n, p: None)
    assert decision.path is None
    assert any(r.levelno == logging.WARNING for r in caplog.records)


# --- verdicts ------------------------------------------------------------------------------------
def metrics(*accuracies: float) -> list[EpochMetrics]:
    return [EpochMetrics(epoch=i + 1, accuracy=a, cer=1 - a) for i, a in enumerate(accuracies)]


def test_a_run_that_learned_passes() -> None:
    assert convergence_problem("recognition", metrics(0.2, 0.6), False, {"bestScore": 0.6}) is None
    assert convergence_problem("segmentation", metrics(0.5), False, {"bestScore": 0.5, "linesFound": 4}) is None


def test_zero_accuracy_did_not_converge() -> None:
    problem = convergence_problem("recognition", metrics(0.0, 0.0), False, {"bestScore": 0.0})
    assert problem is not None and "accuracy stayed at 0" in problem


def test_a_nan_loss_did_not_converge() -> None:
    problem = convergence_problem("recognition", metrics(0.4), True, {"bestScore": 0.4})
    assert problem is not None and "NaN" in problem


def test_no_scored_checkpoint_did_not_converge() -> None:
    assert convergence_problem("recognition", [], False, {"bestScore": None}) is not None


def test_a_segmentation_model_that_finds_no_lines_did_not_converge() -> None:
    problem = convergence_problem("segmentation", metrics(0.33), False, {"bestScore": 0.33, "linesFound": 0})
    assert problem is not None and "no lines" in problem


# --- watchdog and job state -------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_watchdog_fires_only_after_silence_longer_than_its_timeout() -> None:
    clock = FakeClock()
    dog = Watchdog(60, clock)
    clock.now += 59
    assert not dog.stalled()
    dog.beat()
    clock.now += 60
    assert not dog.stalled()
    clock.now += 1
    assert dog.stalled()


def test_a_job_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = Job(job_id="a" * 32, kind="recognition", model_name="writer-anna", base_model="tiny")
    job.metrics = metrics(0.5, 0.7)
    job.status = JobStatus.RUNNING
    store.save(job)
    loaded = store.load(job.job_id)
    assert loaded == job
    assert loaded is not None and loaded.public()["metrics"][1] == {"epoch": 2, "accuracy": 0.7, "cer": 1 - 0.7}
    assert not list(tmp_path.rglob("*.tmp"))


def test_job_ids_that_are_no_ids_are_not_looked_up(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    assert store.load("../etc") is None
    with pytest.raises(ValueError):
        store.dir_of("../../x")
