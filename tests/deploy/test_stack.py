"""The production-shaped run starts each service with compose's environment, changed only where
loopback forces it (tests/deploy/stack.py): checked here, fast, on the environments it builds."""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath

import pytest
from sqlalchemy.engine import make_url

from tests.deploy.stack import PROCESS_VARIABLES, WILDCARD, Service, loopback_services, read_dotenv
from tests.support.compose import raw, service_environment
from tests.support.dockerfile import Image, read_image
from tests.support.processes import ROOT
from tests.support.unprivileged import Account

IMAGES = {"ocr-service": "Dockerfile.ocr", "backend": "Dockerfile.backend"}
DOTENV = {
    **read_dotenv(ROOT / ".env.example"),
    "POSTGRES_PASSWORD": "4b1d" * 8,
    "OCR_TRAINING_TOKEN": "7e57" * 16,
    "APP_HOST_NAME": "archiv.example.org",
}


@pytest.fixture
def images() -> dict[str, Image]:
    return {name: read_image(ROOT / file) for name, file in IMAGES.items()}


@pytest.fixture
def services(tmp_path: Path, images: dict[str, Image]) -> dict[str, Service]:
    me = Account(os.geteuid(), os.getegid())
    accounts = dict.fromkeys(images, me)
    return loopback_services(DOTENV, tmp_path, images, accounts, dict.fromkeys(images, sys.executable), 5432)


def given(name: str, images: dict[str, Image]) -> dict[str, str]:
    """What the container would get: the image's ENV, then compose's environment."""
    return {**images[name].env, **service_environment(name, DOTENV)}


def _on_a_volume(value: str, service: Service) -> bool:
    return value.startswith("/") and any(PurePosixPath(value).is_relative_to(target) for target in service.volumes)


def _names_a_service(value: str) -> bool:
    return any(f"{name}:" in value for name in raw()["services"])


def test_only_addresses_ports_and_volume_paths_differ_from_what_compose_gives(
    services: dict[str, Service], images: dict[str, Image]
) -> None:
    for name, service in services.items():
        compose = given(name, images)
        assert set(service.env) == set(compose) | set(PROCESS_VARIABLES), name
        changed = {key for key in compose if key not in PROCESS_VARIABLES and service.env[key] != compose[key]}
        unexplained = {
            key: compose[key]
            for key in changed
            if not (
                (key.endswith("_HOST") and compose[key] == WILDCARD)
                or key.endswith("_PORT")
                or _on_a_volume(compose[key], service)
                or _names_a_service(compose[key])
            )
        }
        assert not unexplained, f"{name}: changed beyond loopback's needs: {unexplained}"
        assert changed, f"{name}: nothing moved to loopback"


def test_every_server_listens_on_loopback_and_the_backend_finds_the_others_there(
    services: dict[str, Service],
) -> None:
    ocr, backend = services["ocr-service"], services["backend"]
    for service in services.values():
        hosts = {key: value for key, value in service.env.items() if key.endswith("_HOST")}
        assert hosts and set(hosts.values()) == {"127.0.0.1"}, hosts
    assert backend.env["APP_OCR_URLS"] == f"http://127.0.0.1:{ocr.env['OCR_PORT']}"
    database = make_url(backend.env["APP_DATABASE_URL"])
    assert (database.host, database.port, database.password) == ("127.0.0.1", 5432, DOTENV["POSTGRES_PASSWORD"])
    assert backend.env["APP_OCR_TRAINING_TOKEN"] == ocr.env["OCR_TRAINING_TOKEN"] == DOTENV["OCR_TRAINING_TOKEN"]
    ports = [int(value) for s in services.values() for key, value in s.env.items() if key.endswith("_PORT")]
    assert len(ports) == len(set(ports)), f"two servers on one port: {ports}"


def test_every_path_a_service_writes_is_a_folder_of_the_test(services: dict[str, Service], tmp_path: Path) -> None:
    for service in services.values():
        assert service.volumes, service.name
        for target, folder in service.volumes.items():
            assert folder.is_dir() and folder.is_relative_to(tmp_path), (target, folder)
        paths = [value for key, value in service.env.items() if key.endswith(("_DIR", "TMPDIR"))]
        assert paths and all(Path(path).is_relative_to(tmp_path) for path in paths), paths
