"""The compose stack without Docker: each service a process on loopback, as its image's user, with
exactly the environment docker-compose.yml gives it.

A service's environment is built the way a container gets it: the image's ``ENV`` (its
Dockerfile), then compose's ``environment`` interpolated from the operator's ``.env``
(tests/support/compose.py; here a dict: ``.env.example`` with what an operator must set). Only
what cannot be the same outside a container is changed, each for the reason given:

- a value naming another service (``db:5432``, ``http://ocr-service:8001``) points at that
  service's process on 127.0.0.1: without compose's network there is no DNS for service names;
- ``*_HOST=0.0.0.0`` becomes 127.0.0.1: the tests' servers listen on loopback only;
- ``*_PORT`` becomes a free port (every value naming that service's port follows): ports are
  shared by everyone on the machine, and a container's are not;
- a path on one of the service's volumes (compose's ``volumes:``, the image's ``VOLUME``) moves
  to a folder of the test, owned by the image's user, one per named volume (shared by the
  services that mount it, as a named volume is);
- ``PATH``, ``HOME``, ``LANG``: the image's base sets them; here PATH starts with the folder
  of an interpreter with this venv's packages (the image's starts with its venv's),
  HOME is a read-only folder of the test's, LANG C.UTF-8;
- ``PYTHONPATH`` is the checkout: the image copies the code to its WORKDIR (``/app``, on its
  PYTHONPATH); here the code runs from the checkout, which is the working folder too.

The command is the image's ``CMD`` as it is (``python`` found on that PATH, or the image's
entrypoint script, run from the checkout as from ``/app``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tests.support.compose import resolved, service_environment
from tests.support.dockerfile import Image
from tests.support.processes import ROOT, Process, free_port
from tests.support.unprivileged import Account

WILDCARD = "0.0.0.0"  # what compose gives the services to listen on; replaced, never bound here
STOP_LIMIT_S = 60.0


@dataclass
class Network:
    """Where each compose service's ports are on loopback: (service, container port) -> loopback port."""

    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def publish(self, service: str, container_port: int, loopback_port: int | None = None) -> int:
        return self.ports.setdefault((service, container_port), loopback_port or free_port())

    def rewrite(self, value: str) -> str:
        """``value`` with every ``service:port`` it names pointed at that service's loopback port."""
        for (service, container_port), port in self.ports.items():
            value = re.sub(
                rf"(?<![\w.-]){re.escape(service)}:{container_port}(?!\d)",
                f"127.0.0.1:{port}",
                value,
            )
        return value


@dataclass
class Volumes:
    """The folders that stand for the stack's volumes: named ones shared, each owned by its first user."""

    root: Path

    def folder(self, service: str, source: str | None, target: str, account: Account) -> Path:
        name = source if source and not source.startswith(("/", ".")) else f"{service}{target}".replace("/", "_")
        folder = self.root / name
        if not folder.exists():
            account.owns(folder)
        return folder


def _mounts(spec: dict[str, Any], image: Image) -> list[tuple[str | None, str]]:
    """(source, target) of every volume the container has: compose's, then the image's unmounted ones."""
    mounts: list[tuple[str | None, str]] = []
    for volume in spec.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume.get("source"), str(volume["target"])))
        else:
            parts = str(volume).split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else (None, parts[0]))
    targets = {target for _, target in mounts}
    mounts += [(None, str(path)) for path in image.volumes if str(path) not in targets]
    return mounts


@dataclass
class Service:
    """One compose service as a process: its environment, its user, its command."""

    name: str
    env: dict[str, str]
    account: Account
    command: list[str]
    volumes: dict[str, Path]
    logs: Path
    running: Process | None = None

    def path(self, container_path: str) -> Path:
        """Where a path inside the container lies in the test's folders."""
        for target, folder in self.volumes.items():
            if PurePosixPath(container_path).is_relative_to(target):
                return folder / PurePosixPath(container_path).relative_to(target)
        raise AssertionError(f"{container_path} is on none of {self.name}'s volumes: {sorted(self.volumes)}")

    def run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``docker compose exec SERVICE ARGV``: a command with the service's user and environment."""
        return subprocess.run(
            [*self.account.prefix, *argv],
            env=self.env,
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def start(self) -> Process:
        log = self.logs / f"{self.name}-{len(list(self.logs.glob(f'{self.name}-*.log')))}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [*self.account.prefix, *self.command],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running = Process(self.name, popen, log)
        return self.running

    def stop(self) -> None:
        """SIGTERM to the process group (as ``docker stop``), SIGKILL after the grace time."""
        if self.running is None:
            return
        process, self.running = self.running, None
        if process.alive():
            os.killpg(process.popen.pid, signal.SIGTERM)
            try:
                process.popen.wait(timeout=STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        process.popen.wait()


def container_environment(
    service: str,
    image: Image,
    dotenv: Mapping[str, str],
    network: Network,
    volumes: Volumes,
    account: Account,
) -> tuple[dict[str, str], dict[str, Path]]:
    """The service's environment on loopback (see the module's docstring), and its volumes' folders by target."""
    env = {**image.env, **service_environment(service, dotenv)}
    spec = resolved(dotenv)["services"][service]
    folders = {target: volumes.folder(service, source, target, account) for source, target in _mounts(spec, image)}
    for name, value in env.items():
        if name.endswith("_HOST") and value == WILDCARD:
            env[name] = "127.0.0.1"
        elif name.endswith("_PORT") and value.isdigit():
            env[name] = str(network.publish(service, int(value)))
    for name, value in env.items():
        for target, folder in folders.items():
            path = PurePosixPath(value)
            if value.startswith("/") and path.is_relative_to(target):
                env[name] = str(folder / path.relative_to(target))
    return env, folders


def resolve_service_names(env: dict[str, str], network: Network) -> dict[str, str]:
    """``env`` with every ``service:port`` pointed at loopback (once every service's ports are published)."""
    return {name: network.rewrite(value) for name, value in env.items()}


def base_environment(home: Path, python: str) -> dict[str, str]:
    """PATH (its ``python`` the interpreter given), HOME, LANG and PYTHONPATH (see the module's docstring)."""
    binaries = Path(python).parent
    assert (binaries / "python").exists(), f"{binaries} has no python"
    path = f"{binaries}:/usr/local/bin:/usr/bin:/bin"
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT)}


PROCESS_VARIABLES = ("PATH", "HOME", "LANG", "PYTHONPATH")


def loopback_services(
    dotenv: Mapping[str, str],
    folder: Path,
    images: Mapping[str, Image],
    accounts: Mapping[str, Account],
    python: Mapping[str, str],
    db_port: int,
) -> dict[str, Service]:
    """The services of ``images`` (by compose name), not started, with their data under ``folder``;
    the db service's port is ``db_port`` on loopback."""
    network, volumes = Network(), Volumes(folder / "volumes")
    network.publish("db", 5432, db_port)
    services = {}
    for name, image in images.items():
        account = accounts[name]
        env, folders = container_environment(name, image, dotenv, network, volumes, account)
        home = account.owns(folder / f"home-{name}")
        home.chmod(0o555)
        services[name] = Service(
            name, {**env, **base_environment(home, python[name])}, account, image.cmd, folders, folder
        )
    for service in services.values():
        service.env = resolve_service_names(service.env, network)
    return services


def read_dotenv(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped), as compose reads ``.env``."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip().strip("'\"")
    return values
