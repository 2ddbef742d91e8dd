"""docker-compose.yml and .env.example: what a first `docker compose up` depends on.

No Docker engine runs on the build machines: the file is validated against the Compose
specification's schema (tests/test_repository.py) and read here as compose would interpolate it.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_settings import BaseSettings

from backend.settings import Settings as BackendSettings
from ocr_service.settings import Settings as OcrSettings
from tests.support import compose
from tests.support.dockerfile import read_image

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
# Read by docker compose itself, not by docker-compose.yml or a service.
COMPOSE_OWN = {"COMPOSE_PROFILES"}
# Services that run once and exit (no healthcheck, no restart).
ONE_SHOT = {"minio-bucket"}
# A published port that is not the proxy's must bind the host's loopback only.
LOOPBACK = "127.0.0.1:"
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (BackendSettings, OcrSettings)


def _services(environment: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose.resolved(environment or compose.REQUIRED)["services"]
    return services


def _env_example() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE))


def _settings_variables() -> set[str]:
    """Every environment variable a Settings class reads: its prefix and each field's name."""
    names = set()
    for settings_class in SETTINGS_CLASSES:
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in settings_class.model_fields}
    return names


def _references() -> list[compose.Reference]:
    return compose.references(compose.COMPOSE_FILE.read_text())


# Images whose releases have two numbers: PostgreSQL's 15.14 is the patch release of 15.
TWO_PART_VERSIONS = {"postgres"}


def _version(tag: str, repository: str = "") -> bool:
    """An exact version: x.y.z (with an optional suffix such as -alpine), v3.7.3, or a dated release."""
    numbers = r"\d+\.\d+" if repository in TWO_PART_VERSIONS else r"\d+\.\d+\.\d+"
    exact = rf"v?{numbers}(?:-[A-Za-z0-9.-]+)?|RELEASE\.\d{{4}}-\d{{2}}-\d{{2}}T[\d-]+Z"
    return bool(re.fullmatch(exact, tag))


@pytest.mark.parametrize(
    ("repository", "tag", "exact"),
    [
        ("postgres", "15.14-bookworm", True),
        ("caddy", "2.10.2-alpine", True),
        ("prom/prometheus", "v3.7.3", True),
        ("minio/minio", "RELEASE.2025-04-22T22-12-26Z", True),
        ("python", "3.11.14-slim-bookworm", True),
        ("postgres", "latest", False),
        ("postgres", "15", False),
        ("postgres", "15-bookworm", False),
        ("caddy", "2.10-alpine", False),
        ("caddy", "alpine", False),
        ("python", "3.11-slim-bookworm", False),
        ("python", "3.11.14.dev", False),
    ],
)
def test_the_version_rule_tells_exact_tags_from_floating_ones(repository: str, tag: str, exact: bool) -> None:
    assert _version(tag, repository) is exact


def test_every_image_is_pinned_to_an_exact_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: name its image (built images get the project's version as tag)"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        if "build" in service:
            assert tag == version[1], f"{name}: the built image is tagged {tag}, the project is {version[1]}"
        else:
            assert _version(tag, repository), f"{name}: {image} is not pinned to an exact version"
    for dockerfile in ("Dockerfile.backend", "Dockerfile.ocr"):
        for base in read_image(ROOT / dockerfile).bases:
            repository, _, tag = base.rpartition(":")
            assert _version(tag, repository), f"{dockerfile}: base {base} is not pinned to a patch version"


def test_the_core_services_and_the_optional_profiles() -> None:
    services = _services()
    assert {"db", "ocr-service", "backend", "proxy"} <= set(services)
    for core in ("db", "ocr-service", "backend", "proxy"):
        assert "profiles" not in services[core], f"{core} must start with a plain `docker compose up`"
    assert services["minio"]["profiles"] == ["s3"] == services["minio-bucket"]["profiles"]
    assert services["prometheus"]["profiles"] == ["monitoring"] == services["grafana"]["profiles"]


def test_every_long_running_service_has_a_healthcheck_and_restarts() -> None:
    for name, service in _services().items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name
    assert "pg_isready" in str(_services()["db"]["healthcheck"]["test"])
    ocr = _services()["ocr-service"]["healthcheck"]
    assert "/health" in str(ocr["test"]) and ocr["start_period"] == "120s"


def test_dependencies_wait_for_health_and_a_dependency_can_report_it() -> None:
    services = _services()
    backend = services["backend"]["depends_on"]
    assert backend["db"]["condition"] == backend["ocr-service"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["backend"]["condition"] == "service_healthy"
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on as a list waits for nothing; give each a condition"
        for target, rule in depends.items():
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (name, target)
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, which it never reports"
            else:
                assert target in ONE_SHOT
            # A core service may wait for a profile's service only if that one is optional.
            if "profiles" in services[target] and "profiles" not in service:
                assert rule.get("required") is False, f"{name} would not start without the profile of {target}"


def test_only_the_proxy_is_published_and_no_management_port() -> None:
    services = _services()
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert sorted(str(p) for p in published["proxy"]) == ["443:443", "443:443/udp", "80:80"]
    for name, ports in published.items():
        if name != "proxy":
            assert all(str(port).startswith(LOOPBACK) for port in ports), f"{name} publishes {ports} beyond loopback"
    backend = compose.service_environment("backend", compose.REQUIRED)
    management, public = backend["APP_MANAGEMENT_PORT"], backend["APP_PORT"]
    assert management != public
    ocr = compose.service_environment("ocr-service", compose.REQUIRED)
    ocr_management = ocr["OCR_MANAGEMENT_PORT"]
    assert ocr_management != ocr["OCR_PORT"]
    internal = {management, ocr["OCR_PORT"], ocr_management, "9090", "9000"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).split("/")[0].split(":")[-1] not in internal, (name, port)
    # Prometheus reaches the OCR service's management port on the internal network only.
    assert ocr_management in services["ocr-service"]["expose"]
    assert services["ocr-service"]["networks"] == ["internal"]


def test_the_ocr_service_memory_limit_is_its_budget_and_swap_is_off() -> None:
    for given_mb, expected in (("", 12288), ("16384", 16384)):
        environment = {**compose.REQUIRED, "OCR_MEMORY_LIMIT_MB": given_mb}
        ocr = _services(environment)["ocr-service"]
        assert ocr["mem_limit"] == ocr["memswap_limit"] == f"{expected}m"
        assert ocr["environment"]["OCR_MEMORY_LIMIT_MB"] == str(expected)


def test_the_training_token_reaches_both_services_and_is_empty_by_default() -> None:
    raw = compose.raw()["services"]
    assert raw["ocr-service"]["environment"]["OCR_TRAINING_TOKEN"] == "${OCR_TRAINING_TOKEN:-}"
    assert raw["backend"]["environment"]["APP_OCR_TRAINING_TOKEN"] == "${OCR_TRAINING_TOKEN:-}"
    services = _services({**compose.REQUIRED, "OCR_TRAINING_TOKEN": "a" * 64})
    assert services["ocr-service"]["environment"]["OCR_TRAINING_TOKEN"] == "a" * 64
    assert services["backend"]["environment"]["APP_OCR_TRAINING_TOKEN"] == "a" * 64


def test_both_services_run_in_production_mode_and_reach_each_other_internally() -> None:
    backend = compose.service_environment("backend", compose.REQUIRED)
    ocr = compose.service_environment("ocr-service", compose.REQUIRED)
    assert backend["APP_ENV"] == ocr["OCR_ENV"] == "production"
    assert backend["APP_OCR_URLS"] == f"http://ocr-service:{ocr['OCR_PORT']}"
    assert backend["APP_DATABASE_URL"].startswith("postgresql://") and "@db:5432/" in backend["APP_DATABASE_URL"]
    assert backend["APP_PUBLIC_URL"] == f"https://{compose.REQUIRED['APP_HOST_NAME']}"
    # The settings as compose gives them are valid settings (their own validators agree).
    BackendSettings.model_validate(
        {k.removeprefix("APP_").lower(): v for k, v in backend.items() if k.startswith("APP_")}
    )
    OcrSettings.model_validate({k.removeprefix("OCR_").lower(): v for k, v in ocr.items() if v})


@pytest.mark.parametrize("missing", sorted(compose.REQUIRED))
def test_compose_refuses_to_start_without_a_required_variable(missing: str) -> None:
    environment = {k: v for k, v in compose.REQUIRED.items() if k != missing}
    with pytest.raises(compose.MissingVariableError, match=missing):
        compose.resolved(environment)
    with pytest.raises(compose.MissingVariableError, match=missing):
        compose.resolved({**environment, missing: ""})


def test_every_named_volume_is_declared_and_explained() -> None:
    text = compose.COMPOSE_FILE.read_text().splitlines()
    declared = set(compose.raw()["volumes"])
    used = set()
    for number, line in enumerate(text):
        match = re.fullmatch(r"\s+- ([a-z][a-z0-9-]*):(/\S+)", line)
        if match:
            used.add(match[1])
            assert text[number - 1].strip().startswith("#"), f"say what the volume {match[1]} holds: {line.strip()}"
    assert used == declared


def test_every_compose_variable_is_documented_in_env_example() -> None:
    documented = _env_example()
    missing = {reference.name for reference in _references()} - set(documented)
    assert missing == set(), "docker-compose.yml reads variables .env.example does not document"


def test_every_env_example_variable_is_read_by_a_setting_or_by_compose() -> None:
    read = _settings_variables() | {reference.name for reference in _references()} | COMPOSE_OWN
    unread = set(_env_example()) - read
    assert unread == set(), ".env.example documents variables nothing reads"


def test_every_env_example_variable_has_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"[A-Z][A-Z0-9_]*=", line):
            block = number
            while block > 0 and re.match(r"[A-Z][A-Z0-9_]*=", lines[block - 1]):
                block -= 1
            assert block > 0 and lines[block - 1].startswith("#"), f"{line}: no comment above it"


def test_copying_env_example_changes_no_compose_default() -> None:
    """`cp .env.example .env` must not point a container at a value meant for `make run`."""
    documented = _env_example()
    for reference in _references():
        value = documented.get(reference.name, "")
        if reference.operator in (":-", "-") and value:
            assert value == reference.argument, (
                f"{reference.name}={value} in .env.example, but compose's default is {reference.argument!r}"
            )
    assert compose.resolved({**documented, **compose.REQUIRED}) == compose.resolved(compose.REQUIRED)


def test_no_secret_in_env_example_has_a_value() -> None:
    secrets = {
        name: value
        for name, value in _env_example().items()
        if re.search(r"(TOKEN|PASSWORD|SECRET_ACCESS_KEY|ACCESS_KEY_ID|ROOT_USER)$", name)
    }
    assert {"OCR_TRAINING_TOKEN", "POSTGRES_PASSWORD", "APP_ADMIN_PASSWORD", "MINIO_ROOT_PASSWORD"} <= set(secrets)
    assert {name for name, value in secrets.items() if value} == set()


def test_the_token_line_says_it_must_not_be_empty_in_production_and_how_to_make_one() -> None:
    text = ENV_EXAMPLE.read_text()
    block = text[: text.index("\nOCR_TRAINING_TOKEN=")].rsplit("\n\n", 1)[-1]
    assert "must not be empty in production" in block.lower().replace("\n# ", " ")
    assert 'python3 -c "import secrets; print(secrets.token_hex(32))"' in block


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(compose.REQUIRED)), st.text(alphabet="abcdef0123456789", min_size=1)))
def test_interpolation_keeps_every_given_value(overrides: dict[str, str]) -> None:
    environment = {**compose.REQUIRED, **overrides}
    backend = compose.service_environment("backend", environment)
    assert backend["APP_PUBLIC_URL"] == f"https://{environment['APP_HOST_NAME']}"
    assert f":{environment['POSTGRES_PASSWORD']}@db:" in backend["APP_DATABASE_URL"]
    assert _services(environment)["db"]["environment"]["POSTGRES_PASSWORD"] == environment["POSTGRES_PASSWORD"]


REFERENCE = ROOT / "docs" / "deployment-reference.md"


def test_the_reference_names_every_image_as_compose_pins_it() -> None:
    text = REFERENCE.read_text()
    for name, service in _services().items():
        assert f"`{service['image']}`" in text, f"docs/deployment-reference.md: {name}'s image {service['image']}"


def test_the_references_compose_examples_are_valid_compose() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    blocks = re.findall(r"```yaml\n(.*?)```", REFERENCE.read_text(), re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        example = yaml.safe_load(textwrap.dedent(block))
        jsonschema.validate(example, schema)
        # Merged over docker-compose.yml, it names only services and volumes that exist then.
        services = set(compose.raw()["services"]) | set(example["services"])
        for service in example["services"].values():
            assert set(service.get("depends_on", {})) <= services


def _guard(service: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``service``'s entrypoint script run by sh, its final ``exec`` replaced by an echo."""
    script = _services()[service]["entrypoint"][2]
    script = re.sub(r"\bexec (\S+)", r"echo WOULD-START \1", script)
    assert "WOULD-START" in script
    return subprocess.run(
        ["sh", "-c", script], env={"PATH": "/usr/bin:/bin", **environment}, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("user", "password", "starts"),
    [
        ("", "", False),
        ("archiv", "", False),
        ("", "a8f3c9e1b2d4", False),
        ("minioadmin", "a8f3c9e1b2d4", False),
        ("archiv", "minioadmin", False),
        ("archiv", "a8f3c9e1b2d4", True),
    ],
)
def test_minio_never_starts_with_its_default_credentials(user: str, password: str, starts: bool) -> None:
    result = _guard("minio", {"MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password})
    assert (result.returncode == 0) is starts
    assert ("WOULD-START minio" in result.stdout) is starts


@pytest.mark.parametrize(("password", "starts"), [("", False), ("admin", False), ("short-pw", False), ("a" * 12, True)])
def test_grafana_never_starts_with_its_default_password(password: str, starts: bool) -> None:
    result = _guard("grafana", {"GF_SECURITY_ADMIN_PASSWORD": password})
    assert (result.returncode == 0) is starts
    assert ("WOULD-START /run.sh" in result.stdout) is starts
