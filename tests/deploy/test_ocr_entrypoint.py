"""deploy/ocr-entrypoint.sh, run for real: the model store is checked (and repaired) first, and
only a store that can serve is followed by the server.

The script is run as the image runs it, with ``python`` on PATH. That ``python`` is a wrapper
that notes each command line in a log before it runs this venv's interpreter, so the tests see
whether the final ``exec`` happened. The command the script becomes is ``models list --json``
(the script passes its arguments on): a real, quick command in place of the server.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_service.model_ref import packaged_segmentation_model

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "ocr-entrypoint.sh"
# Loading kraken and blla on 2 busy cores.
TIMEOUT_S = 300


def _run(tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "python-calls"
    wrapper = bin_dir / "python"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\nexec {shlex.quote(sys.executable)} "$@"\n'
    )
    wrapper.chmod(0o755)
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "OCR_MODELS_DIR": str(tmp_path / "models"),
        "OCR_TRAINING_DIR": str(tmp_path / "training"),
        "TMPDIR": str(tmp_path),
        "OCR_MEMORY_LIMIT_MB": "16384",
        **settings,
    }
    result = subprocess.run(
        [str(ENTRYPOINT), "models", "list", "--json"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    logged = calls.read_text().splitlines() if calls.exists() else []
    return result, [line.split() for line in logged]


def _listing(stdout: str) -> list[dict[str, object]]:
    listing: list[dict[str, object]] = json.loads(stdout[stdout.index("[") :])
    return listing


@pytest.mark.slow
def test_an_unloadable_segmentation_model_is_restored_before_the_server_starts(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    configured = models / "house-seg.mlmodel"
    configured.write_bytes(b"a model file cut short by a full disk")
    result, calls = _run(tmp_path, OCR_SEGMENTATION_MODEL=str(configured))
    assert result.returncode == 0, result.stderr[-3000:]
    assert calls == [["-m", "ocr_service", "check-models"], ["-m", "ocr_service", "models", "list", "--json"]]
    assert configured.read_bytes() == packaged_segmentation_model().read_bytes()
    [aside] = models.glob("house-seg.mlmodel.unloadable-*")
    assert aside.read_bytes() == b"a model file cut short by a full disk"
    assert f"ready (segmentation model {configured})" in result.stdout
    assert "cannot be loaded" in result.stderr
    assert "house-seg" in {entry["name"] for entry in _listing(result.stdout)}


@pytest.mark.slow
def test_a_missing_segmentation_model_is_restored_before_the_server_starts(tmp_path: Path) -> None:
    configured = tmp_path / "models" / "seg.mlmodel"
    result, calls = _run(tmp_path, OCR_SEGMENTATION_MODEL=str(configured))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(calls) == 2
    assert configured.read_bytes() == packaged_segmentation_model().read_bytes()
    assert "missing" in result.stderr


def test_a_store_that_cannot_be_repaired_stops_the_container(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    # The configured model's folder is a file: the packaged model cannot be put in its place.
    (models / "segmentation").write_text("not a folder")
    result, calls = _run(tmp_path, OCR_SEGMENTATION_MODEL=str(models / "segmentation" / "seg.mlmodel"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "The OCR service cannot start: the model store" in result.stderr
    assert calls == [["-m", "ocr_service", "check-models"]], "the server must not start after a failed check"
    assert result.stdout == ""


def test_settings_that_cannot_start_stop_the_container_before_the_store_is_touched(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, OCR_WORKERS="-3")
    assert result.returncode == 2
    assert "fix its settings (OCR_*)" in result.stderr
    assert calls == [["-m", "ocr_service", "check-models"]]
    assert not (tmp_path / "models").exists()


def test_the_entrypoint_stops_at_a_failing_command_in_a_strict_shell(tmp_path: Path) -> None:
    """Guards the test's premise: without the exit status reaching the shell, the checks above are void."""
    script = ENTRYPOINT.read_text().replace("python -m ocr_service check-models", "false")
    copy = tmp_path / "entrypoint.sh"
    copy.write_text(script)
    copy.chmod(0o755)
    result = subprocess.run([str(copy)], capture_output=True, text=True, timeout=30, check=False, env=dict(os.environ))
    assert result.returncode == 1
