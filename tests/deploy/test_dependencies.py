"""Each image installs only its own extra (pyproject.toml): the backend's has no torch or kraken.

Two checks. Statically, every third-party module a service's code imports (its own package,
``untrusted``, and the ``ocr_service`` modules the backend reaches) must come from the
distributions its extra installs, with their own requirements. At run time, the backend is
imported, started (migrations, first admin, job runner) and asked for its health in a child
process where importing torch, torchvision, kraken or lightning raises ImportError, as it would
in the backend image.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.dockerfile import read_image

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("backend", "ocr_service", "untrusted")
# What only the OCR image has: the OCR extra and the heavy packages kraken pulls in.
OCR_ONLY = ("torch", "torchvision", "kraken", "lightning", "threadpoolctl")


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
        return project


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = _pyproject()
    optional = project["optional-dependencies"]
    assert isinstance(optional, dict)
    lines = [*project["dependencies"], *(line for extra in extras for line in optional[extra])]  # type: ignore[misc]
    return [Requirement(line) for line in lines]


def _name(text: str) -> str:
    return text.lower().replace("_", "-").replace(".", "-")


def _installed_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions these requirements install, with everything they require in turn."""
    seen: set[str] = set()
    pending = [(requirement, frozenset(requirement.extras)) for requirement in requirements]
    while pending:
        requirement, extras = pending.pop()
        name = _name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for line in importlib.metadata.requires(requirement.name) or []:
            child = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append((child, frozenset(child.extras)))
    return {key.split("[", 1)[0] for key in seen}


def _imports(path: Path) -> Iterator[str]:
    """Absolute module names ``path`` imports, anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def _third_party_imports(start: list[Path], reached: set[Path] | None = None) -> dict[str, set[str]]:
    """Top-level third-party modules imported from ``start`` and the first-party modules it reaches
    (added to ``reached`` when given)."""
    found: dict[str, set[str]] = {}
    pending, seen = list(start), set[Path]() if reached is None else reached
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        # A package's __init__ runs before any of its modules.
        parent = path.parent
        while (parent / "__init__.py").is_file() and parent != ROOT:
            pending.append(parent / "__init__.py")
            parent = parent.parent
        for name in _imports(path):
            top = name.split(".", 1)[0]
            if top in FIRST_PARTY:
                module = _module_file(name)
                if module is not None:
                    pending.append(module)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _distributions_of_modules() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _sources(package: str) -> list[Path]:
    # The Alembic environment is loaded by alembic from its path, as part of the backend.
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "extra"),
    [("backend", "backend"), ("ocr_service", "ocr")],
)
def test_each_service_imports_only_what_its_extra_installs(package: str, extra: str) -> None:
    installed = _installed_closure(_requirements((extra,)))
    missing = {}
    for module, files in _third_party_imports(_sources(package)).items():
        distributions = {_name(d) for d in _distributions_of_modules().get(module, [])}
        if not distributions & installed:
            missing[module] = sorted(files)[:3]
    assert missing == {}, f"{package} imports modules its image does not install (pyproject.toml [{extra}])"


def test_the_backend_extra_installs_no_torch_or_kraken() -> None:
    installed = _installed_closure(_requirements(("backend",)))
    assert installed.isdisjoint(OCR_ONLY), sorted(installed & set(OCR_ONLY))
    # The check itself must see what the OCR extra brings.
    assert set(OCR_ONLY) <= _installed_closure(_requirements(("ocr",)))


@pytest.mark.parametrize(
    ("dockerfile", "package"), [("Dockerfile.backend", "backend"), ("Dockerfile.ocr", "ocr_service")]
)
def test_each_image_copies_every_first_party_package_its_service_imports(dockerfile: str, package: str) -> None:
    reached: set[Path] = set()
    _third_party_imports(_sources(package), reached)
    needed = {path.relative_to(ROOT).parts[0] for path in reached}
    copied = {source for sources, _target in read_image(ROOT / dockerfile).copies for source in sources}
    assert needed <= copied, f"{dockerfile} does not copy {sorted(needed - copied)}, which {package} imports"


def test_the_static_check_follows_the_backend_into_the_ocr_service_modules_it_uses() -> None:
    imports = _third_party_imports(_sources("backend"))
    # backend/documents/render.py uses ocr_service.pdf_render, which draws with pypdfium2.
    assert any(path.startswith("ocr_service/") for path in imports["pypdfium2"])


# Run in a child process: importing is global, and this process has torch loaded already.
_START_WITHOUT_OCR_PACKAGES = """
import importlib, importlib.abc, json, pkgutil, sys, tempfile
from pathlib import Path

BLOCKED = set(json.loads(sys.argv[1]))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the backend image")
        return None

sys.meta_path.insert(0, NotInstalled())

import backend
for module in pkgutil.walk_packages(backend.__path__, "backend."):
    if module.name != "backend.migrations.env":  # run by alembic inside a migration only
        importlib.import_module(module.name)

from fastapi.testclient import TestClient
from backend.app import build_services, create_app, create_management_app
from backend.settings import Settings

folder = Path(tempfile.mkdtemp())
settings = Settings(
    database_url=f"sqlite:///{folder}/backend.db", storage_dir=folder / "storage", ocr_urls="http://127.0.0.1:9"
)
services = build_services(settings)
with TestClient(create_app(settings, services=services)) as client, TestClient(
    create_management_app(services)
) as management:
    login = client.post("/api/auth/token", json={"username": "nobody", "password": "wrong-password-1"})
    health = management.get("/health")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps({"login": login.status_code, "health": health.status_code, "loaded": loaded}))
"""


def test_the_backend_starts_and_serves_without_torch_or_kraken(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _START_WITHOUT_OCR_PACKAGES, json.dumps(OCR_ONLY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["loaded"] == []
    assert outcome["health"] == 200
    # A refused login (not a 500): the app runs with its database migrated.
    assert outcome["login"] in (401, 422), outcome


def test_the_import_blocker_refuses_what_it_names() -> None:
    """Guards the guard: with the blocker in place, importing torch must fail."""
    probe = _START_WITHOUT_OCR_PACKAGES.split("import backend", 1)[0] + "import torch\n"
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(OCR_ONLY)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0 and "not installed in the backend image" in result.stderr
