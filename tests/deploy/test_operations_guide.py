"""docs/operations.md stays true of the code and of docker-compose.yml: its compose snippets are valid
Compose, and every service, volume, command, setting and link it names exists."""

from __future__ import annotations

import json
import re
import textwrap

import jsonschema
import pytest
import yaml

from backend.errors import ErrorCode
from backend.settings import Settings as BackendSettings
from ocr_service.settings import Settings as OcrSettings
from tests.support.compose import raw
from tests.support.processes import ROOT

GUIDE = ROOT / "docs" / "operations.md"
TEXT = GUIDE.read_text(encoding="utf-8")


def _settings_variables() -> set[str]:
    names = set()
    for settings, prefix in ((BackendSettings, "APP_"), (OcrSettings, "OCR_")):
        names |= {prefix + field.upper() for field in settings.model_fields}
    return names


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_its_compose_snippets_are_valid_compose_for_the_services_there_are() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, re.S)
    assert blocks
    for block in blocks:
        snippet = yaml.safe_load(textwrap.dedent(block))
        jsonschema.validate(snippet, schema)
        assert set(snippet["services"]) <= set(raw()["services"]), snippet


# Options of `docker compose` and its commands that take a value (the value is not a service).
VALUED = {"-v", "--volume", "-p", "--project-name", "-f", "--file", "--tail", "-e", "--env", "-u", "--user", "--format"}


def _services_named(words: list[str]) -> list[str]:
    """The services a `docker compose …` command line names (its words after `docker compose`)."""
    named: list[str] = []
    rest = list(words)
    while rest and rest[0].startswith("-"):  # options of compose itself: -p NAME, -f FILE
        rest = rest[2:] if rest[0] in VALUED else rest[1:]
    if not rest:
        return named
    command, arguments = rest[0], rest[1:]
    positional = []
    while arguments:
        word = arguments.pop(0)
        if word in VALUED:
            arguments = arguments[1:]
        elif not word.startswith("-"):
            positional.append(word)
    if command == "cp":
        named = [word.split(":")[0] for word in positional if ":" in word]
    elif command in ("up", "create", "stop", "restart", "build"):
        named = positional
    elif command in ("exec", "run", "logs", "ps") and positional:
        named = positional[:1]
    return named


def test_every_service_it_runs_a_command_in_is_a_compose_service() -> None:
    services = set(raw()["services"])
    lines = re.findall(r"docker compose ([^\n`|&;)$#]*)", TEXT.replace("\\\n", " "))
    used = {name for line in lines for name in _services_named(line.split())}
    assert {"backend", "ocr-service", "db"} <= used, used
    assert used <= services, used - services


def test_every_volume_it_mounts_by_name_is_a_volume_of_the_project() -> None:
    compose = raw()
    named = set(re.findall(rf"\b{re.escape(compose['name'])}_([\w-]+):", TEXT))
    assert named and named <= set(compose["volumes"]), named


def test_every_backend_and_model_command_it_names_exists() -> None:
    backend_main = (ROOT / "backend" / "__main__.py").read_text()
    for command in set(re.findall(r"python -m backend ([\w-]+)", TEXT)):
        assert f'"{command}"' in backend_main, command
    models_cli = (ROOT / "ocr_service" / "cli.py").read_text()
    commands = set(re.findall(r"(?:python -m ocr_service |`)models ([a-z]+)\b", TEXT))
    assert {"install", "list"} <= commands, commands
    for command in commands:
        assert re.search(rf'add_parser\(\s*"{command}"', models_cli), command


# Names of settings, not the error codes the guide also quotes (OCR_SERVICE_UNAVAILABLE).
SETTINGS_NAMED = sorted(set(re.findall(r"\b((?:APP|OCR)_[A-Z0-9_]+)\b", TEXT)) - set(ErrorCode.__members__))


@pytest.mark.parametrize("name", SETTINGS_NAMED)
def test_every_setting_it_names_is_read_by_a_service_or_by_compose(name: str) -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    assert name in _settings_variables() or f"${{{name}" in compose_text, name


def test_every_variable_it_says_to_set_in_env_is_one_compose_reads() -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    in_env = set(re.findall(r"`([A-Z][A-Z0-9_]+)`[^.\n]*? in `\.env`", TEXT))
    in_env |= set(re.findall(r"^   - `([A-Z][A-Z0-9_]+)`", TEXT, re.M))
    assert in_env
    for name in in_env:
        assert f"${{{name}" in compose_text or name == "COMPOSE_PROFILES", f"compose never reads {name} from .env"


def test_its_links_lead_to_files_and_headings_that_exist() -> None:
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", TEXT):
        path = (GUIDE.parent / target).resolve() if target else GUIDE
        assert path.exists(), target
        if anchor:
            assert anchor in _anchors(path.read_text(encoding="utf-8")), f"{target}#{anchor}"
