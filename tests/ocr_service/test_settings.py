"""OCR_* settings: parsed from the environment, validated at start-up with clear messages."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ocr_service.engine.inspect import ModelFileError
from ocr_service.engine.pipeline import packaged_segmentation_model
from ocr_service.engine.validate import model_checker, validate_model_file
from ocr_service.settings import (
    MODEL_CHECK_BASE_MEMORY_MB,
    MODEL_CHECK_MEMORY_PER_MODEL_MB,
    SERVICE_BASE_MEMORY_MB,
    Settings,
    worker_memory_mb,
)
from ocr_service.training import runner
from ocr_service.training.service import default_trainer_command
from tests.conftest import make_settings


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OCR_PORT", "OCR_ALLOWED_PDF_HOSTS", "OCR_TRAINING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.port == 8001
    assert settings.allowed_pdf_hosts == []
    assert settings.training_token is None
    assert settings.models_dir.is_absolute()


def test_allowed_hosts_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCR_ALLOWED_PDF_HOSTS", " Archive.example.org, files.example.org. ,,")
    assert Settings().allowed_pdf_hosts == ["archive.example.org", "files.example.org"]


def test_a_relative_segmentation_model_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="absolute"):
        Settings(models_dir=tmp_path, segmentation_model=Path("seg.mlmodel"))


def test_a_segmentation_model_outside_the_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="inside the model store"):
        Settings(models_dir=tmp_path / "models", segmentation_model=tmp_path / "elsewhere" / "seg.mlmodel")


def test_a_segmentation_model_escaping_the_store_with_dots_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="inside the model store"):
        Settings(models_dir=tmp_path / "models", segmentation_model=tmp_path / "models" / ".." / "seg.mlmodel")


def test_worker_count_follows_the_memory_limit(tmp_path: Path) -> None:
    probe = Settings(models_dir=tmp_path, memory_limit_mb=8192)
    one = Settings(models_dir=tmp_path, memory_limit_mb=probe.reserved_memory_mb + probe.worker_memory_mb, cpus=8)
    assert one.worker_count == 1
    one.check_memory_budget()
    roomy = Settings(models_dir=tmp_path, memory_limit_mb=64 * 1024, cpus=8)
    assert roomy.worker_count == min(8, (64 * 1024 - roomy.reserved_memory_mb) // roomy.worker_memory_mb)


# Peak RSS of one worker reading one page (bench/bench_worker_memory.py, README "Benchmark: a
# worker's memory"), the highest of repeated runs: (width at blla's 1800 px height, page pixels, MB).
MEASURED_WORKER_PEAKS = [
    (1273, 1754 * 2480, 1987),
    (1273, 2481 * 3508, 1704),
    (2546, 3508 * 2480, 2500),
    (3700, 5098 * 2480, 3277),
    (3700, 10196 * 4960, 3422),
    (3700, 11100 * 5400, 3457),
]


@pytest.mark.parametrize(("width", "pixels", "peak_mb"), MEASURED_WORKER_PEAKS)
def test_a_workers_reservation_covers_its_measured_peak_with_a_margin(width: int, pixels: int, peak_mb: int) -> None:
    # Runs of the same page differ by up to 12 %: the reservation keeps at least 5 % above the highest.
    assert worker_memory_mb(width, pixels) >= 1.05 * peak_mb


@hyp_settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1800, 20_000),
    pixels=st.integers(1, 400_000_000),
    memory=st.integers(2048, 128 * 1024),
    cpus=st.integers(1, 32),
)
def test_the_worker_count_and_the_budget_follow_the_widest_and_largest_page_admitted(
    width: int, pixels: int, memory: int, cpus: int
) -> None:
    settings = Settings(
        models_dir=Path("/nonexistent"),
        memory_limit_mb=memory,
        cpus=cpus,
        max_segmentation_width=width,
        max_page_pixels=pixels,
    )
    each = settings.worker_memory_mb
    assert each == worker_memory_mb(width, pixels)
    # A wider or larger page admitted never makes a worker's reservation smaller.
    assert worker_memory_mb(width + 1, pixels) >= each and worker_memory_mb(width, pixels + 1) >= each
    fit = (memory - settings.reserved_memory_mb) // each
    assert settings.worker_count == max(1, min(cpus, fit))
    if fit >= 1:
        settings.check_memory_budget()
        assert settings.reserved_memory_mb + settings.worker_count * each <= memory
    else:
        with pytest.raises(ValueError) as refused:
            settings.check_memory_budget()
        message = str(refused.value)
        assert f"{each} MB each" in message
        assert "OCR_MAX_SEGMENTATION_WIDTH" in message and "OCR_MAX_PAGE_PIXELS" in message


def test_too_many_workers_for_the_memory_limit_are_refused(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path, memory_limit_mb=4096, workers=4)
    with pytest.raises(ValueError, match="lower OCR_WORKERS"):
        settings.check_memory_budget()


def test_the_entry_point_names_the_bad_setting_and_exits(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ocr_service"],
        env={"OCR_PORT": "not-a-port", "OCR_MODELS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OCR_*" in result.stderr
    assert "port" in result.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "1e10", "-1"])
def test_a_page_time_limit_faulthandler_cannot_arm_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OCR_PAGE_TIMEOUT_S", value)
    with pytest.raises(ValidationError, match="page_timeout_s"):
        Settings()


# --- CPUs and the memory budget (container resources) ---------------------------------------


@hyp_settings(max_examples=300, deadline=None)
@given(cpus=st.integers(1, 64), memory=st.integers(1024, 256 * 1024), token=st.booleans())
def test_workers_and_their_threads_never_exceed_the_cpus(cpus: int, memory: int, token: bool) -> None:
    settings = Settings(
        models_dir=Path("/nonexistent"), cpus=cpus, memory_limit_mb=memory, training_token="t" if token else None
    )
    assert 1 <= settings.worker_count <= cpus
    assert settings.worker_count * settings.worker_threads <= cpus
    assert settings.training_thread_count == max(1, cpus // 2)


@hyp_settings(max_examples=300, deadline=None)
@given(
    memory=st.integers(1024, 64 * 1024),
    workers=st.integers(1, 16),
    token=st.booleans(),
    jobs=st.integers(1, 3),
    trainer_mb=st.integers(512, 8192),
    model_mb=st.integers(1, 1024),
)
def test_the_budget_counts_workers_the_service_a_model_check_and_each_trainer_when_training_is_on(
    memory: int, workers: int, token: bool, jobs: int, trainer_mb: int, model_mb: int
) -> None:
    settings = Settings(
        models_dir=Path("/nonexistent"),
        memory_limit_mb=memory,
        workers=workers,
        training_token="t" if token else None,
        training_max_jobs=jobs,
        training_memory_mb=trainer_mb,
        max_model_bytes=model_mb * 1024 * 1024,
    )
    check_mb = MODEL_CHECK_BASE_MEMORY_MB + MODEL_CHECK_MEMORY_PER_MODEL_MB * model_mb
    need = SERVICE_BASE_MEMORY_MB + check_mb + workers * settings.worker_memory_mb + (jobs * trainer_mb if token else 0)
    if need <= memory:
        settings.check_memory_budget()
        return
    with pytest.raises(ValueError) as refused:
        settings.check_memory_budget()
    message = str(refused.value)
    assert f"about {need} MB" in message and "OCR_MEMORY_LIMIT_MB" in message and "OCR_MAX_MODEL_BYTES" in message
    assert ("OCR_TRAINING_MEMORY_MB" in message) is token


def test_turning_training_on_reserves_a_trainer_and_leaves_fewer_workers() -> None:
    common = {"models_dir": Path("/nonexistent"), "cpus": 8, "memory_limit_mb": 16 * 1024}
    without = Settings(**common)
    with_training = Settings(**common, training_token="t")
    assert with_training.worker_count == without.worker_count - 1 >= 1
    with_training.check_memory_budget()


def test_a_training_folder_the_user_cannot_create_stops_the_entry_point_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "ocr_service"],
        env={
            "OCR_MODELS_DIR": str(tmp_path / "models"),
            "OCR_TRAINING_DIR": str(tmp_path / "a-file" / "training"),
            "OCR_MEMORY_LIMIT_MB": "8192",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OCR_TRAINING_DIR" in result.stderr and "cannot be created" in result.stderr


# --- child processes get their settings as arguments ----------------------------------------


def test_the_trainer_is_told_the_log_level_on_its_command_line(tmp_path: Path) -> None:
    command = default_trainer_command(tmp_path, "DEBUG")
    assert command[-3:] == ["--log-level", "DEBUG", str(tmp_path)]


@pytest.mark.parametrize("argv", [["--log-level", "LOUD", "job"], [], ["a", "b"]])
def test_the_trainer_refuses_a_wrong_command_line(argv: list[str]) -> None:
    assert runner.main(argv) == runner.EXIT_USAGE


@pytest.mark.slow
def test_the_model_check_runs_under_the_address_space_the_settings_give(tmp_path: Path) -> None:
    blla = packaged_segmentation_model()
    roomy = Settings(models_dir=tmp_path, model_validation_address_space_mb=16 * 1024)
    assert model_checker(roomy)(blla).kind == "segmentation"
    # Below what torch maps when it is imported: the child cannot even start its loader.
    cramped = functools.partial(validate_model_file, timeout_s=120, address_space_mb=2048)
    with pytest.raises(ModelFileError, match="crashed"):
        cramped(blla)


@hyp_settings(max_examples=25, deadline=None)
@given(pixels=st.integers(1, 400_000_000), memory_mb=st.one_of(st.none(), st.integers(256, 1 << 20)))
def test_the_pdf_renderers_address_space_is_the_setting_or_grows_with_the_largest_page(
    pixels: int, memory_mb: int | None
) -> None:
    settings = make_settings(Path("/unused"), max_page_pixels=pixels, pdf_render_memory_mb=memory_mb)
    if memory_mb is not None:
        assert settings.pdf_render_address_space == memory_mb * 2**20
    else:
        # The interpreter and pdfium, plus 16 bytes for each pixel of the largest page.
        assert settings.pdf_render_address_space == 512 * 2**20 + 16 * pixels


@pytest.mark.parametrize("memory_mb", [0, 1, 255])
def test_a_pdf_renderer_address_space_it_cannot_start_in_is_refused(memory_mb: int) -> None:
    with pytest.raises(ValidationError, match="pdf_render_memory_mb"):
        make_settings(Path("/unused"), pdf_render_memory_mb=memory_mb)
