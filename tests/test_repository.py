"""The repository's own contract: compose file, Dockerfiles, settings documentation, CI."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from backend.settings import Settings as BackendSettings
from ocr_service.settings import Settings
from tests.support import compose as compose_file
from tests.support.dockerfile import read_image

ROOT = Path(__file__).resolve().parents[1]
# Inside the repository, so that a fresh clone tests without anything beside it.
SCHEMAS = ROOT / "tests" / "schemas"
# Environment variables naming a folder the OCR service writes to.
WRITABLE_PATHS = ("OCR_MODELS_DIR", "OCR_TRAINING_DIR", "TMPDIR")


def _ocr_compose() -> dict[str, Any]:
    """The OCR service as compose runs it with an empty .env (every default)."""
    ocr: dict[str, Any] = compose_file.resolved(compose_file.REQUIRED)["services"]["ocr-service"]
    return ocr


def _megabytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([mg])", size.lower())
    assert match, f"unexpected size {size!r}"
    return int(match[1]) * (1024 if match[2] == "g" else 1)


def test_compose_file_follows_the_compose_specification() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, json.loads((SCHEMAS / "compose-spec.json").read_text()))


def test_compose_keeps_the_ocr_service_internal() -> None:
    ocr = _ocr_compose()
    assert "ports" not in ocr, "the OCR service must not be published on the host"
    assert ocr["build"]["dockerfile"] == "Dockerfile.ocr"
    # The worker count derives from this limit; it must match the container's own limit.
    assert int(ocr["environment"]["OCR_MEMORY_LIMIT_MB"]) == _megabytes(ocr["mem_limit"])


def test_every_folder_the_image_writes_is_its_own_named_volume() -> None:
    image = read_image(ROOT / "Dockerfile.ocr")
    compose = compose_file.resolved(compose_file.REQUIRED)
    mounts = dict(reversed(str(v).split(":")[:2]) for v in compose["services"]["ocr-service"]["volumes"])
    environment = {**image.env, **compose_file.service_environment("ocr-service", compose_file.REQUIRED)}
    for name in WRITABLE_PATHS:
        path = PurePosixPath(environment[name])
        assert path.is_absolute(), f"{name}={path} would lie under the read-only WORKDIR"
        assert path in image.volumes, f"{name}={path} is not a VOLUME of the image"
    for volume in image.volumes:
        source = mounts.get(str(volume))
        assert source is not None, f"compose mounts nothing on the image's volume {volume}"
        assert source in compose["volumes"], f"{volume} is mounted from {source}, not a named volume"
        # An empty named volume takes the owner of the folder it is mounted on.
        assert any("mkdir -p" in run and str(volume) in run and f"chown -R {image.user}" in run for run in image.runs)


@pytest.mark.parametrize("token", [None, "a-token"])
def test_the_compose_memory_limit_fits_the_workers_the_model_check_and_a_trainer(token: str | None) -> None:
    environment = {k: str(v) for k, v in _ocr_compose()["environment"].items() if v != ""}
    settings = Settings(**{k.removeprefix("OCR_").lower(): v for k, v in environment.items()}, training_token=token)
    settings.check_memory_budget()
    assert settings.worker_count >= 1


def test_the_build_context_leaves_out_the_venv_caches_and_data_but_not_what_is_copied() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    for needed in (".venv", ".cache", "data", ".git"):
        assert needed in patterns, f".dockerignore must leave out {needed}"
    for dockerfile in ("Dockerfile.ocr", "Dockerfile.backend"):
        for source in read_image(ROOT / dockerfile).context_copies:
            assert not any(fnmatch.fnmatch(source, p) for p in patterns), f"{dockerfile} copies {source}, ignored"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.ocr", "Dockerfile.backend"])
def test_dockerfiles_copy_only_what_exists_and_run_unprivileged(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    for source in read_image(ROOT / dockerfile).context_copies:
        assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert re.search(r"^CMD \[", text, re.MULTILINE)


# Variables of .env.example that no Settings class reads: compose's own (docker-compose.yml).
_COMPOSE_ONLY = {r.name for r in compose_file.references(compose_file.COMPOSE_FILE.read_text())} | {"COMPOSE_PROFILES"}


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^(OCR_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    settings = {f"OCR_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from .env.example"
    assert documented - settings - _COMPOSE_ONLY == set(), ".env.example documents settings that do not exist"


def test_every_backend_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^(APP_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    settings = {f"APP_{name.upper()}" for name in BackendSettings.model_fields}
    assert settings - documented == set(), "backend settings missing from .env.example"
    assert documented - settings - _COMPOSE_ONLY == set(), ".env.example documents backend settings that do not exist"


def test_ci_runs_the_readmes_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_ci_runs_the_backend_suite_again_on_postgresql() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "APP_TEST_DATABASE=postgresql" in ci and "tests/backend" in ci


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read a variable from the environment (``os.environ[...]``, ``.get``, ``getenv``).

    Handing the whole environment to a child (``dict(os.environ, ...)``) is not a read.
    """

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"get", "setdefault", "pop"} and is_environ(node.func.value):
                lines.append(node.lineno)
            elif node.func.attr in {"getenv", "getenvb"}:
                lines.append(node.lineno)
    return lines


def test_the_ocr_service_reads_its_settings_only_through_settings() -> None:
    reads = {
        f"{path.relative_to(ROOT)}:{line}"
        for path in (ROOT / "ocr_service").rglob("*.py")
        if path.name != "settings.py"
        for line in _environment_reads(ast.parse(path.read_text(encoding="utf-8")))
    }
    assert reads == set(), "pass the value from Settings (to a child process as an argument)"


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.environ['OCR_X']",
        "import os\nos.environ.get('OCR_LOG_LEVEL', 'INFO')",
        "import os\nos.getenv('OCR_X')",
        "from os import environ\nenviron.get('X')",
    ],
)
def test_the_settings_guard_sees_each_way_of_reading_the_environment(source: str) -> None:
    assert _environment_reads(ast.parse(source)) == [2]
