"""OCR_DEVICE: parsed and checked at start, and handed to kraken's inference and training configs.

No GPU here: torch's view of CUDA is replaced where a test needs one to be there (or not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ocr_service import __main__ as service_main
from ocr_service.engine import pipeline, train
from ocr_service.engine.device import CPU, Device, check_device, parse_device
from ocr_service.engine.pipeline import PageEngine
from ocr_service.engine.train import TrainingPlan, trainer_device
from ocr_service.pool import WorkerPool
from ocr_service.store import ModelStore
from ocr_service.training.service import TrainingService
from tests.conftest import make_settings
from tests.ocr_service.test_training_service import RECOGNITION, submit, wait_finished


@given(st.integers(min_value=0, max_value=999), st.sampled_from(["cuda", "CUDA", " cuda"]))
def test_a_gpu_is_named_cuda_or_cuda_n(index: int, word: str) -> None:
    assert parse_device(f"{word}:{index}") == Device("gpu", index)
    assert parse_device(word) == Device("gpu", 0)
    assert parse_device("cpu") == CPU and CPU.lightning_devices == "auto"
    assert Device("gpu", index).lightning_devices == [index]


@given(st.text(max_size=12).filter(lambda t: t.strip().lower() not in ("cpu", "cuda")))
def test_anything_else_is_refused(text: str) -> None:
    if any(text.strip().lower() == f"cuda:{n}" for n in range(1000)):
        return
    with pytest.raises(ValueError, match="must be 'cpu', 'cuda' or 'cuda:N'"):
        parse_device(text)


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "cpu:0", "mps", "cuda:0,1", "cuda:1; rm -rf /"])
def test_settings_refuse_a_device_kraken_would_not_understand(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError, match="device"):
        make_settings(tmp_path, device=text)


def test_settings_keep_the_device_in_one_spelling(tmp_path: Path) -> None:
    assert make_settings(tmp_path).device == "cpu"
    assert make_settings(tmp_path, device="CUDA").device == "cuda:0"
    assert make_settings(tmp_path, device="cuda:2").kraken_device == Device("gpu", 2)


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _cuda_devices(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_a_gpu_torch_cannot_see_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda(monkeypatch)
    check_device(CPU)
    with pytest.raises(ValueError, match=r"OCR_DEVICE=cuda:0 asks for a GPU, but torch .* sees none.*OCR_DEVICE=cpu"):
        check_device(Device("gpu", 0))


def test_a_gpu_index_past_the_last_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_devices(monkeypatch, 2)
    check_device(Device("gpu", 1))
    with pytest.raises(ValueError, match=r"cuda:2: torch sees 2 GPU\(s\)"):
        check_device(Device("gpu", 2))


def test_the_service_does_not_start_on_a_gpu_it_does_not_have(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_cuda(monkeypatch)
    monkeypatch.setenv("OCR_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OCR_TRAINING_DIR", str(tmp_path / "training"))
    monkeypatch.setenv("OCR_MEMORY_LIMIT_MB", "16384")
    monkeypatch.setenv("OCR_DEVICE", "cuda")
    assert service_main.main([]) == 2
    error = capsys.readouterr().err
    assert "The OCR service cannot start" in error and "OCR_DEVICE=cuda:0 asks for a GPU" in error


def test_the_page_engine_gives_kraken_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[Device] = []
    monkeypatch.setattr(pipeline, "check_device", checked.append)
    engine = PageEngine(None, device="cuda:1")
    assert checked == [Device("gpu", 1)]
    for config in (engine._seg_config, engine._rec_config):
        assert (config.accelerator, config.device) == ("gpu", [1])
    on_cpu = PageEngine(None)
    assert (on_cpu._seg_config.accelerator, on_cpu._seg_config.device) == ("cpu", "auto")


def test_each_worker_is_told_the_device(tmp_path: Path) -> None:
    pool = WorkerPool(1, 1, lambda: None, device="cuda:3")
    assert pool._spec().device == "cuda:3"
    assert WorkerPool(1, 1, lambda: None)._spec().device == "cpu"


def test_the_trainer_and_its_configs_get_the_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert trainer_device("cpu") == {"accelerator": "cpu", "devices": 1}
    assert trainer_device("cuda:2") == {"accelerator": "gpu", "devices": [2]}
    plan = TrainingPlan(
        kind="recognition",
        data_format="path",
        training_files=[],
        output_dir=str(tmp_path),
        epochs=1,
        threads=1,
        device="cuda:2",
    )
    assert TrainingPlan.from_json(plan.to_json()).device == "cuda:2"
    made: dict[str, Any] = {}
    import kraken.train

    monkeypatch.setattr(kraken.train, "KrakenTrainer", lambda **kwargs: made.update(kwargs))
    train._trainer(plan, lambda event: None)
    assert (made["accelerator"], made["devices"]) == ("gpu", [2])
    from kraken.configs import VGSLRecognitionTrainingConfig

    config = VGSLRecognitionTrainingConfig(**train._common_config(plan))
    assert (config.accelerator, config.device) == ("gpu", [2])


def test_a_training_job_is_planned_on_the_configured_device(tmp_path: Path) -> None:
    seen = tmp_path / "seen-plan.json"
    # A trainer that only keeps the plan it was given (the job then fails: nothing trained).
    keep_plan = "import shutil, sys; shutil.copyfile(sys.argv[1] + '/plan.json', sys.argv[2])"
    settings = make_settings(tmp_path / "models", training_dir=tmp_path / "training", device="cuda:1")
    service = TrainingService(
        settings,
        ModelStore(settings.models_dir),
        trainer_command=lambda job_dir: [sys.executable, "-c", keep_plan, str(job_dir), str(seen)],
        poll_interval_s=0.05,
        validate=lambda path: RECOGNITION,
    )
    job = submit(service)
    wait_finished(service, job.job_id)
    assert json.loads(seen.read_text())["device"] == "cuda:1"
