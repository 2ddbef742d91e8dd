"""OCR_* settings: parsed from the environment, validated at start-up with clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ocr_service.settings import SERVICE_BASE_MEMORY_MB, WORKER_MEMORY_MB, Settings


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
    one = Settings(models_dir=tmp_path, memory_limit_mb=SERVICE_BASE_MEMORY_MB + WORKER_MEMORY_MB)
    assert one.worker_count == 1
    # The 8 GB container of the old deployment: as many workers as fit, never more than cores.
    roomy = Settings(models_dir=tmp_path, memory_limit_mb=8192)
    assert 1 <= roomy.worker_count <= 8192 // WORKER_MEMORY_MB


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
