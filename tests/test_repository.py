"""The repository's own contract: compose file, Dockerfiles, settings documentation, CI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from backend.settings import Settings as BackendSettings
from ocr_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "schemas"


def test_compose_file_follows_the_compose_specification() -> None:
    schema_path = SCHEMAS / "compose-spec.json"
    if not schema_path.exists():
        pytest.fail(f"the Compose schema is missing at {schema_path}")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, json.loads(schema_path.read_text()))


def test_compose_keeps_the_ocr_service_internal_and_its_models_on_a_volume() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ocr = compose["services"]["ocr"]
    assert "ports" not in ocr, "the OCR service must not be published on the host"
    assert any(str(v).endswith(":/data/models") for v in ocr["volumes"])
    assert ocr["environment"]["OCR_MODELS_DIR"] == "/data/models"
    assert ocr["build"]["dockerfile"] == "Dockerfile.ocr"
    # The worker count derives from this limit; it must match the container's own limit.
    assert int(ocr["environment"]["OCR_MEMORY_LIMIT_MB"]) == 6144
    assert ocr["deploy"]["resources"]["limits"]["memory"] == "6g"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.ocr", "Dockerfile.backend"])
def test_dockerfiles_copy_only_what_exists_and_run_unprivileged(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert re.search(r"^CMD \[", text, re.MULTILINE)


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^(OCR_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    settings = {f"OCR_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from .env.example"
    assert documented - settings == set(), ".env.example documents settings that do not exist"


def test_every_backend_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^(APP_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    settings = {f"APP_{name.upper()}" for name in BackendSettings.model_fields}
    assert settings - documented == set(), "backend settings missing from .env.example"
    assert documented - settings == set(), ".env.example documents backend settings that do not exist"


def test_ci_runs_the_readmes_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_ci_runs_the_backend_suite_again_on_postgresql() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "APP_TEST_DATABASE=postgresql" in ci and "tests/backend" in ci
