"""docker-compose.yml as a test reads it: parsed, and its ``${VAR}`` references filled in.

No Docker engine runs on the build machines. Interpolation follows the Compose specification's
forms: ``${VAR}``, ``${VAR:-default}`` / ``${VAR-default}``, ``${VAR:?message}`` /
``${VAR?message}``, ``${VAR:+other}`` and ``$$`` for a literal ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


class MissingVariableError(ValueError):
    """A ``${VAR:?message}`` (or ``?``) whose variable is unset (or empty)."""


@dataclass(frozen=True)
class Reference:
    name: str
    operator: str | None
    argument: str


def references(text: str) -> list[Reference]:
    return [Reference(m["name"], m["op"], m["arg"] or "") for m in _REFERENCE.finditer(text) if m[0] != "$$"]


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match["name"], match["op"], match["arg"] or ""
        value = environment.get(name)
        missing = value is None or (value == "" and operator is not None and operator.startswith(":"))
        if operator in (":-", "-"):
            return argument if missing else str(value)
        if operator in (":?", "?"):
            if missing:
                raise MissingVariableError(f"{name}: {argument}")
            return str(value)
        if operator in (":+", "+"):
            return "" if missing else argument
        return value or ""

    return _REFERENCE.sub(replace, text)


def raw() -> dict[str, Any]:
    """The file as written: ``${VAR}`` references left in place."""
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return compose


def _walk(node: Any, environment: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environment)
    if isinstance(node, list):
        return [_walk(item, environment) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, environment) for key, value in node.items()}
    return node


def resolved(environment: Mapping[str, str]) -> dict[str, Any]:
    """The file as compose would run it with ``environment`` as its .env and shell."""
    result: dict[str, Any] = _walk(raw(), environment)
    return result


def service_environment(service: str, environment: Mapping[str, str]) -> dict[str, str]:
    """What compose gives ``service``'s container in its environment (the map form)."""
    values = resolved(environment)["services"][service].get("environment", {})
    assert isinstance(values, dict), f"{service}: write environment as a map"
    return {name: "" if value is None else str(value) for name, value in values.items()}


# The variables compose requires (``${VAR:?…}``), as an operator's .env would give them.
REQUIRED = {"APP_HOST_NAME": "archiv.example.org", "POSTGRES_PASSWORD": "5f0c2b8e9d1a47c3b6e8f2a9d4c7e1b0"}
