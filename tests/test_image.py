"""The image starts: its command, run as an unprivileged user with the image's environment, serves.

No Docker engine runs on the build machines, so the container is reproduced from
Dockerfile.ocr and docker-compose.yml: the code the image copies is copied into a folder the
service cannot write (WORKDIR), each VOLUME is a folder owned by the unprivileged user (as a
named volume takes the owner of its mount point), HOME is read-only, and the image's CMD runs
with the image's and compose's environment — only the volume paths are remapped onto those
folders, the address onto a free loopback port, and ``python`` on PATH is an interpreter with
this venv's packages (the image's CMD is its entrypoint script, which checks the model store
and then starts the server with ``python``). As root the command runs as ``nobody`` (65534) through ``setpriv``; as any
other user it runs as that user, who is unprivileged already.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
import psutil
import pytest
import yaml

from tests.support.dockerfile import Image, read_image
from tests.support.unprivileged import interpreter, nobody

ROOT = Path(__file__).resolve().parents[1]
# Loading kraken and the packaged segmentation model in one worker takes 10-60 s on 2 busy cores.
START_LIMIT_S = 300.0
STOP_LIMIT_S = 60.0


@dataclass
class Container:
    root: Path
    app: Path
    volumes: dict[PurePosixPath, Path]
    home: Path
    uid: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_unprivileged_user() -> tuple[list[str], int]:
    """The command prefix that drops to an unprivileged user, and that user's id."""
    account = nobody()
    return account.prefix, account.uid


_interpreter = interpreter


def _read_only(tree: Path) -> None:
    """Read-only to everyone; executables (the entrypoint, as git keeps it) stay executable."""
    for folder, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, 0o555 if os.stat(path).st_mode & stat.S_IXUSR else 0o444)
        os.chmod(folder, 0o555)


@pytest.fixture
def container(image: Image) -> Iterator[Container]:
    _prefix, uid = _as_unprivileged_user()
    # Not pytest's tmp_path: its parent is private to root (0700), and the user must reach it.
    root = Path(tempfile.mkdtemp(prefix="ocr-image-"))
    root.chmod(0o755)
    try:
        app = root / PurePosixPath(image.workdir).relative_to("/")
        for sources, target in image.copies:
            for source in sources:
                destination = app / target / Path(source).name if target.endswith("/") else app / target
                destination.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, destination)
        volumes = {}
        for volume in image.volumes:
            folder = root / volume.relative_to("/")
            folder.mkdir(parents=True)
            os.chown(folder, uid, uid)
            volumes[volume] = folder
        home = root / "home"
        home.mkdir()
        _read_only(app)
        _read_only(home)
        for parent in {folder.parent for folder in volumes.values()}:
            parent.chmod(0o555)
        yield Container(root=root, app=app, volumes=volumes, home=home, uid=uid)
    finally:
        for folder, _dirs, _files in os.walk(root):
            os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(root)


@pytest.fixture
def image() -> Image:
    return read_image(ROOT / "Dockerfile.ocr")


def _environment(image: Image, container: Container, port: int) -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["ocr-service"]["environment"]
    # Values compose takes from the operator's .env are left out, except the training token (made as
    # .env.example says: compose runs the service in production mode, which refuses a weak one):
    # with it the service creates its training folder and reserves a trainer's memory.
    given = {name: str(value) for name, value in compose.items() if not str(value).startswith("${")}
    env = {**image.env, **given, "OCR_TRAINING_TOKEN": secrets.token_hex(32)}
    for name, value in env.items():
        for volume, folder in container.volumes.items():
            if PurePosixPath(value) == volume or PurePosixPath(value).is_relative_to(volume):
                env[name] = str(folder / PurePosixPath(value).relative_to(volume))
    # The management port moves to a free loopback port too: 9101 may be another test's just now.
    env.update(OCR_HOST="127.0.0.1", OCR_PORT=str(port), OCR_WORKERS="1")
    env.update(OCR_MANAGEMENT_HOST="127.0.0.1", OCR_MANAGEMENT_PORT=str(_free_port()))
    env.update(PATH=f"{container.root / 'bin'}:/usr/local/bin:/usr/bin:/bin", HOME=str(container.home), LANG="C.UTF-8")
    return env


def _command(image: Image, container: Container, python: str) -> list[str]:
    """The image's CMD, with ``python`` on PATH (as the image's venv is) running ``python``.

    A wrapper, not a link: a venv's interpreter finds its packages from where it is called.
    """
    folder = container.root / "bin"
    folder.mkdir(exist_ok=True)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
    wrapper.chmod(0o755)
    folder.chmod(0o755)
    if image.cmd[0] == "python":
        return [str(wrapper), *image.cmd[1:]]
    script = container.app / image.cmd[0]
    assert os.access(script, os.X_OK), f"the image's CMD {image.cmd[0]} is not an executable it copies"
    return [str(script), *image.cmd[1:]]


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The service's workers share its session: one signal to the group, as `docker stop` does.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def test_the_image_paths_are_absolute_and_on_volumes(image: Image) -> None:
    for name in ("OCR_MODELS_DIR", "OCR_TRAINING_DIR", "TMPDIR"):
        path = PurePosixPath(image.env[name])
        assert path.is_absolute() and path in image.volumes, f"{name}={path} is not one of the image's volumes"
    assert image.user not in (None, "root", "0")


@pytest.mark.slow
def test_the_image_command_serves_as_an_unprivileged_user_from_read_only_code(
    image: Image, container: Container
) -> None:
    prefix, uid = _as_unprivileged_user()
    port = _free_port()
    env = _environment(image, container, port)
    cwd = container.app
    python = _interpreter(prefix, container.root)

    # The copy is what runs, as in the image, not the checkout the venv was installed from.
    where = subprocess.run(
        [*prefix, python, "-c", "import ocr_service; print(ocr_service.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(container.app), where.stdout

    log_path = container.root / "service.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*prefix, *_command(image, container, python)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        status = None
        deadline = time.monotonic() + START_LIMIT_S
        while status != 200 and process.poll() is None and time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
            except httpx.TransportError:
                status = None
            if status != 200:
                time.sleep(1)
        log_tail = log_path.read_text(errors="replace")[-3000:]
        assert process.poll() is None, f"the service exited with {process.returncode}:\n{log_tail}"
        assert status == 200, f"/health did not answer 200 within {START_LIMIT_S:g} s:\n{log_tail}"
        assert psutil.Process(process.pid).uids().effective == uid != 0
        training = container.volumes[PurePosixPath(image.env["OCR_TRAINING_DIR"])]
        models = container.volumes[PurePosixPath(image.env["OCR_MODELS_DIR"])]
        assert training.stat().st_uid == models.stat().st_uid == uid
    finally:
        _stop(process)
