"""``python -m ocr_service models``: the same checks and store as the API, for operators.

kraken's model repository cannot be reached from the test machines: the real client class
(``KrakenRepository``) runs with local stand-ins for its two network calls, injected.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from ocr_service.cli import EXIT_NO_NETWORK, EXIT_OK, EXIT_REFUSED, main
from ocr_service.engine.repository import KrakenRepository
from ocr_service.settings import Settings
from tests.conftest import make_settings

DOI = "10.5281/zenodo.7933463"


@pytest.fixture(scope="module")
def tiny_coreml(tiny_model: Path) -> Path:
    return converted_to_coreml(tiny_model)


def converted_to_coreml(tiny_model: Path) -> Path:
    """The tiny model converted to CoreML in-process with kraken's own converter (cached)."""
    target = tiny_model.with_name("tiny-converted.mlmodel")
    if not target.exists():
        from kraken.models.convert import convert_models

        part = tiny_model.with_name("tiny-converted.part.mlmodel")
        written = Path(str(convert_models([tiny_model], part, weights_format="coreml")))
        written.replace(target)
    return target


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run(argv: list[str], settings: Settings, repository: Any = None) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, settings=settings, repository=repository, out=out, err=err)
    return Outcome(code, out.getvalue(), err.getvalue())


def store_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".store.lock"}


@dataclass
class Record:
    software_name: str = "kraken"
    keywords: list[str] = field(default_factory=list)
    summary: str = "German handwriting (stand-in)"


@dataclass
class LocalZenodo:
    """Stands in for kraken.repo.get_description and htrmopo.get_model, with the same signatures."""

    files: dict[str, bytes]
    record: Record = field(default_factory=Record)
    asked: list[str] = field(default_factory=list)

    def describe(self, doi: str, filter_fn: Callable[[Any], bool] = lambda r: True, **_: Any) -> Record:
        self.asked.append(doi)
        if not filter_fn(self.record):
            raise ValueError(f"Record {doi} exists but is not a valid kraken record")
        return self.record

    def fetch(self, doi: str, path: Path, callback: Callable[[int, int], Any] = lambda t, a: None) -> Path:
        total = sum(len(d) for d in self.files.values())
        callback(0, 0)
        for name, data in self.files.items():
            with open(path / name, "wb") as handle:
                for start in range(0, len(data), 1024):
                    chunk = data[start : start + 1024]
                    callback(total, len(chunk))
                    handle.write(chunk)
        return path


def offline(*_: Any, **__: Any) -> Any:
    raise requests.ConnectionError("HTTPSConnectionPool(host='zenodo.org', port=443): Failed to resolve 'zenodo.org'")


def test_install_a_coreml_file_as_default_and_list_it(tmp_path: Path, tiny_coreml: Path) -> None:
    settings = make_settings(tmp_path / "models")
    installed = run(["install", str(tiny_coreml), "--default"], settings)
    assert installed.code == EXIT_OK, installed.err
    assert "Installed 'tiny-converted' version 1 (recognition, line type bbox" in installed.out
    assert "default" in installed.out
    assert (settings.models_dir / "tiny-converted.mlmodel").is_file()

    listed = run(["list"], settings)
    assert listed.code == EXIT_OK
    row = next(line for line in listed.out.splitlines() if line.startswith("tiny-converted"))
    assert row.split()[1:5] == ["recognition", "bbox", "uploaded", "1"]
    assert row.endswith("default")
    [blla] = [line for line in listed.out.splitlines() if line.startswith("blla")]
    assert blla.split()[1] == "segmentation" and blla.endswith("segmentation")

    again = run(["install", str(tiny_coreml)], settings)
    assert again.code == EXIT_REFUSED
    assert "MODEL_EXISTS" in again.err and "replace" in again.err
    removed = run(["remove", "tiny-converted"], settings)
    assert removed.code == EXIT_REFUSED
    assert "MODEL_IS_DEFAULT" in removed.err


def test_a_pickle_or_a_checkpoint_is_refused_with_a_plain_message(tmp_path: Path) -> None:
    import torch

    settings = make_settings(tmp_path / "models")
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps({"w": [0.0] * 10}, protocol=4))
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, checkpoint)
    run(["list"], settings)  # creates the store
    before = store_files(settings.models_dir)
    for path, says in ((pickled, "pickle"), (checkpoint, "ZIP")):
        refused = run(["install", str(path), "--name", "evil"], settings)
        assert refused.code == EXIT_REFUSED
        assert "INVALID_MODEL" in refused.err and says in refused.err
        assert refused.out == ""
    assert store_files(settings.models_dir) == before


def test_neither_a_file_nor_a_doi_is_refused(tmp_path: Path) -> None:
    refused = run(["install", str(tmp_path / "missing.mlmodel")], make_settings(tmp_path / "models"))
    assert refused.code == EXIT_REFUSED
    assert "neither a model file nor a DOI" in refused.err


def test_install_by_doi_without_network_says_so_and_writes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "models")
    run(["list"], settings)
    before = store_files(settings.models_dir)
    repository = KrakenRepository(describe=offline, fetch=offline)
    refused = run(["install", DOI, "--name", "kurrent"], settings, repository)
    assert refused.code == EXIT_NO_NETWORK
    assert "no network" in refused.err
    assert "install the file" in refused.err
    assert store_files(settings.models_dir) == before
    assert list((settings.models_dir / ".staging").iterdir()) == []


def test_install_by_doi_downloads_checks_and_installs(tmp_path: Path, tiny_model: Path) -> None:
    settings = make_settings(tmp_path / "models")
    zenodo = LocalZenodo({"german_handwriting.safetensors": tiny_model.read_bytes(), "README.md": b"# card"})
    repository = KrakenRepository(describe=zenodo.describe, fetch=zenodo.fetch)
    installed = run(["install", f"https://doi.org/{DOI}", "--default"], settings, repository)
    assert installed.code == EXIT_OK, installed.err
    assert zenodo.asked == [DOI]
    shown = run(["show", "german-handwriting"], settings)
    described = json.loads(shown.out)
    assert described["source"] == "downloaded"
    assert described["doi"] == DOI
    assert (described["kind"], described["lineType"], described["default"]) == ("recognition", "bbox", True)
    assert store_files(settings.models_dir) == {
        "german-handwriting.safetensors",
        ".meta/german-handwriting.json",
        ".state.json",
    }


@pytest.mark.parametrize(
    ("zenodo", "code", "says"),
    [
        (LocalZenodo({"a.safetensors": b"x" * 5000}), "MODEL_TOO_LARGE", "larger than the limit"),
        (LocalZenodo({"a.mlmodel": b"x"}, record=Record(software_name="other")), "INVALID_MODEL", "kraken record"),
        (LocalZenodo({"README.md": b"# no model"}), "INVALID_MODEL", "exactly one"),
        (LocalZenodo({"a.mlmodel": b"x", "b.safetensors": b"y"}), "INVALID_MODEL", "exactly one"),
    ],
    ids=["too-large", "not-kraken", "no-model-file", "two-model-files"],
)
def test_a_repository_record_that_cannot_be_installed_is_refused(
    tmp_path: Path, zenodo: LocalZenodo, code: str, says: str
) -> None:
    settings = make_settings(tmp_path / "models", max_model_bytes=4096)
    run(["list"], settings)
    before = store_files(settings.models_dir)
    refused = run(["install", DOI], settings, KrakenRepository(describe=zenodo.describe, fetch=zenodo.fetch))
    assert refused.code == EXIT_REFUSED
    assert code in refused.err and says in refused.err
    assert store_files(settings.models_dir) == before
    assert list((settings.models_dir / ".staging").iterdir()) == []


def test_python_m_ocr_service_models_dispatches_to_the_cli(tmp_path: Path, tiny_model: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCR_")}
    env["OCR_MODELS_DIR"] = str(models)
    listed = subprocess.run(
        [sys.executable, "-m", "ocr_service", "models", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:2] == ["NAME", "KIND"]
    assert "blla" in listed.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "ocr_service", "models", "remove", "blla"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == EXIT_REFUSED
    assert "MODEL_PROTECTED" in refused.stderr


def test_remove_refuses_a_model_an_unfinished_training_job_uses(tmp_path: Path) -> None:
    from ocr_service.training.jobs import Job, JobStatus, JobStore

    settings = make_settings(tmp_path / "models", training_dir=tmp_path / "training")
    jobs = JobStore(settings.training_dir)
    jobs.save(Job(job_id="a" * 32, kind="recognition", model_name="new", base_model="base", status=JobStatus.RUNNING))
    jobs.save(Job(job_id="b" * 32, kind="recognition", model_name="old", base_model=None, status=JobStatus.DONE))
    store = settings.models_dir
    store.mkdir(parents=True)
    (store / "base.safetensors").write_bytes(b"x")
    (store / "old.safetensors").write_bytes(b"y")
    refused = run(["remove", "base"], settings)
    assert refused.code == EXIT_REFUSED
    assert "MODEL_IN_USE" in refused.err
    assert (store / "base.safetensors").exists()
    assert run(["remove", "old"], settings).code == EXIT_OK
    assert not (store / "old.safetensors").exists()
