"""A production-shaped run without Docker: the compose stack's services as processes on loopback.

PostgreSQL (the build machine's server, on a role and database of the test's own, dropped at
the end), the OCR service and the backend are separate processes, each started as its image's
unprivileged user (``setpriv`` when the tests run as root; as the current user otherwise) with
exactly the environment docker-compose.yml gives it (tests/deploy/stack.py lists the few
changes loopback forces, and why). The operator's ``.env`` is ``.env.example`` with the
secrets set, as the guide's first start says.

The story, in order (the tests share the module's stack and run in this order):

1. from an empty database the backend migrates, an admin is made with ``create-user``, the
   Kurrent stand-in (the tests' tiny model) is installed with ``models install``, a generated
   letter is uploaded, read by the real OCR service and exported as PAGE XML and plain text;
2. ``backup`` while the backend serves, ``verify-backup``, then a new, empty installation
   (new database, new volumes) gets ``restore``: the same documents, lines, corrections and
   their history, users, jobs, and the model store;
3. the same backup restored into an installation on the embedded SQLite database, backed up
   there, and that backup restored into another PostgreSQL installation: SQLite to
   PostgreSQL by backup and restore, the archive unchanged.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import psutil
import pytest
from alembic.script import ScriptDirectory
from rapidfuzz.distance import Levenshtein
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from backend.db import alembic_config, make_engine
from tests.backend.conftest import POSTGRES_URL
from tests.deploy.stack import Service, loopback_services, read_dotenv
from tests.support.compose import raw, service_environment
from tests.support.dockerfile import read_image
from tests.support.models import tiny_recognition_model
from tests.support.processes import ROOT, answers, healthy, wait_for
from tests.support.synthetic import page_texts, render_page, to_pdf
from tests.support.unprivileged import image_account, interpreter

pytestmark = pytest.mark.slow

SERVICES = ("db", "ocr-service", "backend")
ADMIN = "verwalterin"
# The admin's password belongs to the archive: a restored installation takes it along.
PASSWORD = secrets.token_urlsafe(18)
# The letter: tall narrow pages (kraken segments a page at 1800 px high, so a narrow one is the
# cheapest), three one-word lines each, drawn at the OCR service's default 300 dpi so it reads
# the pixels as drawn; the tiny model knows these words' letters.
PAGES, DPI = 2, 300


@dataclass
class Installation:
    """One installation of the stack: its operator's .env, database, volumes, and the services."""

    name: str
    dotenv: dict[str, str]
    database_url: str
    ocr: Service
    backend: Service

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.backend.env['APP_PORT']}"

    @property
    def models(self) -> Path:
        """The OCR service's model store (the ocr-models volume)."""
        return Path(self.ocr.env["OCR_MODELS_DIR"])


class Stack:
    """Builds installations from docker-compose.yml, the Dockerfiles and an operator's .env."""

    def __init__(self, root: Path) -> None:
        self.root = root
        services = raw()["services"]
        missing = [name for name in SERVICES if name not in services]
        assert not missing, f"docker-compose.yml lacks the services {missing} (issue 17: db, ocr-service, backend)"
        self.images = {
            "ocr-service": read_image(ROOT / "Dockerfile.ocr"),
            "backend": read_image(ROOT / "Dockerfile.backend"),
        }
        self.accounts = {name: image_account(image) for name, image in self.images.items()}
        self.python = {name: interpreter(account.prefix, root / name) for name, account in self.accounts.items()}
        self.databases: list[tuple[str, str]] = []
        self.installations: list[Installation] = []
        self.admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})

    def operator_env(self) -> dict[str, str]:
        """``.env.example`` with what an operator must set: the secrets and the host name."""
        dotenv = read_dotenv(ROOT / ".env.example")
        dotenv.update(
            POSTGRES_PASSWORD=secrets.token_hex(16),
            OCR_TRAINING_TOKEN=secrets.token_hex(32),
            APP_HOST_NAME="archiv.example.org",
        )
        return dotenv

    def install(self, name: str, sqlite: bool = False) -> Installation:
        """An installation's services, not started, on a database of its own (``sqlite``: the image's embedded one)."""
        dotenv = self.operator_env()
        postgres = make_url(POSTGRES_URL)
        services = loopback_services(
            dotenv, self.root / name, self.images, self.accounts, self.python, postgres.port or 5432
        )
        backend = services["backend"]
        if sqlite:
            # The image's embedded default (no APP_DATABASE_URL from compose), on its volume.
            embedded = make_url(self.images["backend"].env["APP_DATABASE_URL"])
            assert embedded.drivername == "sqlite" and embedded.database, embedded
            backend.env["APP_DATABASE_URL"] = f"sqlite:///{backend.path(embedded.database)}"
        else:
            backend.env["APP_DATABASE_URL"] = self._database(dotenv, backend.env["APP_DATABASE_URL"], postgres.port)
        installation = Installation(name, dotenv, backend.env["APP_DATABASE_URL"], services["ocr-service"], backend)
        self.installations.append(installation)
        return installation

    def _database(self, dotenv: dict[str, str], compose_url: str, port: int | None) -> str:
        """A role and database of the test's own, in place of the db service's, with the password compose gives.

        The db service's user and database names are fixed in compose; on the machine's shared
        server every installation of every test run needs names of its own (the one override of
        the URL besides the host, which Network already pointed at loopback).
        """
        url = make_url(compose_url)
        db = service_environment("db", dotenv)
        # compose's own consistency: the backend logs in to the db service's database as its user.
        assert (url.username, url.password, url.database) == (
            db["POSTGRES_USER"],
            db["POSTGRES_PASSWORD"],
            db["POSTGRES_DB"],
        ), f"the backend's APP_DATABASE_URL is not the db service's database: {url!r}"
        assert (url.host, url.port) == ("127.0.0.1", port or 5432), url
        role = f"{db['POSTGRES_USER']}_{secrets.token_hex(5)}"
        assert url.password is not None
        self._create_database(role, url.password, role)
        return url.set(username=role, database=role).render_as_string(hide_password=False)

    def _create_database(self, role: str, password: str, database: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"))
            self.databases.append((role, database))
            connection.execute(text(f'CREATE DATABASE "{database}" OWNER "{role}"'))

    def close(self) -> None:
        """Stops every service, then drops the test's databases and roles."""
        for installation in self.installations:
            installation.backend.stop()
            installation.ocr.stop()
        with self.admin.connect() as connection:
            for role, database in self.databases:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
                connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        self.admin.dispose()


# --- the services -------------------------------------------------------------------------------


def start_ocr(installation: Installation) -> None:
    ocr = installation.ocr
    process = ocr.start()
    url = f"http://127.0.0.1:{ocr.env['OCR_PORT']}/health"
    wait_for(lambda: healthy(url), "the OCR service is healthy", (process,))


def start_backend(installation: Installation) -> None:
    backend = installation.backend
    process = backend.start()
    health = f"http://127.0.0.1:{backend.env['APP_MANAGEMENT_PORT']}/health"
    wait_for(lambda: healthy(health), "the backend is healthy", (process,))
    wait_for(lambda: answers(f"{installation.url}/api/documents", 401), "the backend's API answers", (process,))


def client(installation: Installation) -> httpx.Client:
    token = httpx.post(f"{installation.url}/api/auth/token", data={"username": ADMIN, "password": PASSWORD}, timeout=60)
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['accessToken']}"}
    return httpx.Client(base_url=installation.url, headers=headers, timeout=120)


def succeeds(result: Any) -> str:
    assert result.returncode == 0, f"exit status {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


def backup(installation: Installation, name: str) -> Path:
    """``python -m backend backup`` then ``verify-backup`` with the backend's user and environment,
    into its backups volume, with the OCR service's model store mounted beside it (the guide's
    ``docker compose run --rm -v familienarchiv_ocr-models:/data/models:ro backend …``)."""
    backend = installation.backend
    archive = backend.path(f"/data/backups/{name}")
    succeeds(backend.run(["python", "-m", "backend", "backup", str(archive), "--models-dir", str(installation.models)]))
    verified = succeeds(backend.run(["python", "-m", "backend", "verify-backup", str(archive)]))
    assert "lines" in verified, verified
    return archive


def restore(installation: Installation, archive: Path) -> None:
    """``python -m backend restore`` into the installation, nothing of it started yet (the models
    into its model store, as ``backup`` reads them)."""
    command = ["python", "-m", "backend", "restore", str(archive), "--models-dir", str(installation.models)]
    succeeds(installation.backend.run(command))


# --- what the archive holds ---------------------------------------------------------------------


def snapshot(http: httpx.Client) -> dict[str, Any]:
    """Everything a restore must bring back, as the API shows it."""
    documents = http.get("/api/documents", params={"limit": 200})
    assert documents.status_code == 200, documents.text
    items = documents.json()["items"]
    lines = {d["id"]: http.get(f"/api/documents/{d['id']}/lines").json() for d in items}
    history = {
        line["id"]: http.get(f"/api/lines/{line['id']}/history").json()
        for document in lines.values()
        for line in document
    }
    users = http.get("/api/users").json()
    return {"documents": items, "lines": lines, "history": history, "users": users}


def model_store(folder: Path) -> dict[str, str]:
    """The model store's files (not its working folders) with their sha256."""
    skipped = {".staging", ".pins"}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not skipped & set(path.relative_to(folder).parts) and not path.name.endswith(".lock")
    }


def page_xml_texts(xml: bytes) -> list[str]:
    """Each TextLine's main text (its TextEquiv of the lowest index: PAGE's rule) in document order."""
    texts = []
    for line in ElementTree.fromstring(xml).iterfind(".//{*}TextLine"):
        equivs = sorted(line.iterfind("{*}TextEquiv"), key=lambda equiv: int(equiv.get("index", "0")))
        unicode = equivs[0].find("{*}Unicode")
        texts.append("".join(unicode.itertext()) if unicode is not None else "")
    return texts


# --- the stack ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    try:
        probe = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with probe.connect():
            pass
        probe.dispose()
    except OperationalError as exc:
        pytest.skip(f"the production-shaped run needs PostgreSQL, not reachable at {POSTGRES_URL}: {exc}")
    # Not pytest's tmp_path: its parents are private to root (0700), and the services' users must reach it.
    root = Path(tempfile.mkdtemp(prefix="production-run-"))
    root.chmod(0o755)
    stack = Stack(root)
    try:
        yield stack
    finally:
        stack.close()
        for folder, _dirs, _files in os.walk(root):
            os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(root)


@dataclass
class Letter:
    pages: list[list[str]]
    document_id: int
    job: dict[str, Any]
    corrected: dict[str, Any]


@pytest.fixture(scope="module")
def first(stack: Stack) -> Installation:
    """The first installation: migrated from empty, an admin made, the model installed, both services up."""
    installation = stack.install("first")
    backend, ocr = installation.backend, installation.ocr
    # `docker compose run --rm ocr-service python -m ocr_service models install …` (the guide's way).
    model = tiny_recognition_model("safetensors")
    staged = ocr.path(f"/data/tmp/{model.name}")
    shutil.copyfile(model, staged)
    succeeds(
        ocr.run(["python", "-m", "ocr_service", "models", "install", str(staged), "--name", "kurrent", "--default"])
    )
    start_ocr(installation)
    start_backend(installation)
    # `docker compose exec backend python -m backend create-user …`
    made = backend.run(
        ["python", "-m", "backend", "create-user", ADMIN, "--role", "admin", "--password-stdin"],
        stdin=PASSWORD,
    )
    succeeds(made)
    return installation


@pytest.fixture(scope="module")
def letter(first: Installation) -> Letter:
    """A generated letter uploaded, read by the OCR service through the backend, and one line corrected twice."""
    pages = [page_texts(4200 + n, 3, 1) for n in range(PAGES)]
    images = [render_page(texts, width=150, height=750, font_size=24, margin=16).image for texts in pages]
    with client(first) as http:
        uploaded = http.post(
            "/api/documents",
            files={"file": ("brief-1897.pdf", to_pdf(images, dpi=DPI), "application/pdf")},
            data={"title": "Brief an Tante Erna, 1897"},
        )
        assert uploaded.status_code == 201, uploaded.text
        document_id = int(uploaded.json()["id"])
        started = http.post(f"/api/documents/{document_id}/ocr")
        assert started.status_code == 202, started.text
        job_id = started.json()["jobId"]
        watched = tuple(p for p in (first.backend.running, first.ocr.running) if p is not None)
        job = wait_for(
            lambda: (j := http.get(f"/api/ocr/jobs/{job_id}").json())["status"] in ("DONE", "FAILED") and j,
            "the OCR job ends",
            watched,
            poll_s=1,
        )
        assert job["status"] == "DONE", job
        line = http.get(f"/api/documents/{document_id}/lines").json()[0]
        for text in ("Liebe Erna,", "Liebe Tante Erna,"):
            saved = http.patch(f"/api/lines/{line['id']}", json={"text": text, "version": line["version"]})
            assert saved.status_code == 200, saved.text
            line = saved.json()
    return Letter(pages, document_id, job, line)


@pytest.fixture(scope="module")
def first_backup(first: Installation, letter: Letter) -> tuple[Path, dict[str, Any]]:
    """A backup made while the first installation serves, and what the archive held then."""
    with client(first) as http:
        before = snapshot(http)
    return backup(first, "archiv-first.tar"), before


# --- 1. first start, upload, OCR, export ---------------------------------------------------------


def test_each_service_runs_as_its_images_unprivileged_user(first: Installation) -> None:
    for service in (first.ocr, first.backend):
        assert service.running is not None and service.running.alive()
        uids = psutil.Process(service.running.popen.pid).uids()
        assert uids.real == uids.effective == service.account.uid
        if os.geteuid() == 0:
            assert service.account.uid != 0


def test_postgresql_serves_the_backend_as_an_unprivileged_user(first: Installation) -> None:
    # The server process that serves the backend's own login (PostgreSQL forks one per connection).
    engine = make_engine(first.database_url)
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            assert psutil.Process(pid).uids().effective != 0
    finally:
        engine.dispose()


def test_the_backend_migrated_the_empty_database_to_its_newest_revision(first: Installation) -> None:
    engine = make_engine(first.database_url)
    try:
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_uploaded_letter_is_read_line_by_line_by_the_ocr_service(first: Installation, letter: Letter) -> None:
    with client(first) as http:
        lines = http.get(f"/api/documents/{letter.document_id}/lines").json()
        document = http.get(f"/api/documents/{letter.document_id}").json()
    assert document["status"] == "DONE" and document["pageCount"] == PAGES
    assert (letter.job["pagesDone"], letter.job["pagesTotal"]) == (PAGES, PAGES)
    # Read with the model the operator installed as the default.
    assert {line["modelName"] for line in lines} == {"kurrent"}
    read = [[line["ocrText"] for line in lines if line["page"] == page] for page in range(1, PAGES + 1)]
    assert [len(page) for page in read] == [len(page) for page in letter.pages]
    drawn = " ".join(word for page in letter.pages for word in page)
    found = " ".join(word for page in read for word in page)
    # The tiny model misreads a letter here and there; a broken pipeline reads nothing like it.
    assert Levenshtein.normalized_distance(drawn, found) < 0.2, (drawn, found)


def test_the_letter_exports_as_page_xml_and_plain_text_with_the_correction(first: Installation, letter: Letter) -> None:
    with client(first) as http:
        lines = http.get(f"/api/documents/{letter.document_id}/lines").json()
        plain = http.get(f"/api/documents/{letter.document_id}/export", params={"format": "txt"})
        page = http.get(f"/api/documents/{letter.document_id}/export", params={"format": "page"})
    assert plain.status_code == page.status_code == 200, (plain.text, page.text)
    current = [[line["currentText"] for line in lines if line["page"] == n] for n in range(1, PAGES + 1)]
    assert current[0][0] == "Liebe Tante Erna,"
    assert plain.text == "\f".join("".join(f"{t}\n" for t in texts) for texts in current)
    with zipfile.ZipFile(io.BytesIO(page.content)) as archive:
        xml = sorted(name for name in archive.namelist() if name.endswith(".xml"))
        assert len(xml) == PAGES, archive.namelist()
        exported = [page_xml_texts(archive.read(name)) for name in xml]
    assert exported == current


# --- 2. backup, empty installation, restore ------------------------------------------------------


def test_a_backup_restored_into_an_empty_installation_holds_the_same_archive(
    stack: Stack, first: Installation, first_backup: tuple[Path, dict[str, Any]]
) -> None:
    archive, before = first_backup
    second = stack.install("second")
    restore(second, archive)
    start_backend(second)
    with client(second) as http:
        assert snapshot(http) == before
    assert model_store(second.models) == model_store(first.models)
    assert "kurrent.safetensors" in model_store(second.models)
    second.backend.stop()


# --- 3. SQLite to PostgreSQL ---------------------------------------------------------------------


def test_an_archive_moves_from_sqlite_to_postgresql_by_backup_and_restore(
    stack: Stack, first_backup: tuple[Path, dict[str, Any]]
) -> None:
    archive, before = first_backup
    embedded = stack.install("embedded", sqlite=True)
    restore(embedded, archive)
    start_backend(embedded)
    with client(embedded) as http:
        assert snapshot(http) == before
    moved = backup(embedded, "archiv-sqlite.tar")
    embedded.backend.stop()

    server = stack.install("server")
    assert server.database_url.startswith("postgresql")
    restore(server, moved)
    start_backend(server)
    with client(server) as http:
        assert snapshot(http) == before
        # The moved installation goes on working: ids continue past the restored rows.
        line = http.get(f"/api/documents/{before['documents'][0]['id']}/lines").json()[1]
        saved = http.patch(f"/api/lines/{line['id']}", json={"text": "nach dem Umzug", "version": line["version"]})
        assert saved.status_code == 200, saved.text
        assert [h["textAfter"] for h in http.get(f"/api/lines/{line['id']}/history").json()][-1] == "nach dem Umzug"
    server.backend.stop()
