"""What docker-compose.yml gives a service: its environment, interpolated as ``docker compose`` does.

No Docker engine runs on the build machines, so the tests that start a service "as compose
would" read the compose file themselves: a service's ``environment`` (mapping or list) and
``env_file: .env`` (the operator's ``.env``, which a test supplies as a dict), with every
``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``, ``${VAR?message}``,
``${VAR:+alternative}``, ``${VAR+alternative}``, ``$VAR`` and ``$$`` interpolated from that
``.env`` the way the Compose specification says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>" + _NAME + r")(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<plain>" + _NAME + r"))"
)


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing, or a ``$`` compose would refuse."""


def interpolate(value: str, dotenv: Mapping[str, str]) -> str:
    """``value`` with its variables replaced from ``dotenv`` (the operator's ``.env``)."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        given = dotenv.get(name)
        op, arg = match["op"], match["arg"] or ""
        # With a colon, an empty value counts as missing; without, only an unset one.
        missing = given is None or (op is not None and op.startswith(":") and given == "")
        if op in (":-", "-"):
            return arg if missing else str(given)
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"${{{name}}} is required: {arg}")
            return str(given)
        if op in (":+", "+"):
            return "" if missing else arg
        return "" if given is None else given

    result = _TOKEN.sub(replace, value)
    leftover = _TOKEN.sub("", value).count("$")
    if leftover:
        raise InterpolationError(f"{value!r} holds a '$' compose cannot interpolate (write '$$' for a literal one)")
    return result


@dataclass
class ComposeService:
    name: str
    spec: dict[str, Any]

    def environment(self, dotenv: Mapping[str, str]) -> dict[str, str]:
        """The variables compose sets in the service's container (before the image's own ENV)."""
        env: dict[str, str] = {}
        env_files = self.spec.get("env_file", [])
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            path = entry["path"] if isinstance(entry, dict) else entry
            if Path(path).name != ".env":
                raise InterpolationError(f"{self.name}: env_file {path!r} is not the operator's .env")
            env.update(dotenv)
        raw = self.spec.get("environment", {})
        pairs: list[tuple[str, object]] = (
            list(raw.items()) if isinstance(raw, dict) else [_list_item(str(item)) for item in raw]
        )
        for name, value in pairs:
            if value is None:
                # `NAME` without a value passes the variable through from the operator's shell / .env.
                if name in dotenv:
                    env[name] = dotenv[name]
                continue
            env[name] = interpolate(str(value), dotenv)
        return env

    def volume_targets(self) -> list[str]:
        """Where the service's volumes (named or bound) are mounted in its container."""
        targets = []
        for volume in self.spec.get("volumes", []):
            if isinstance(volume, dict):
                targets.append(str(volume["target"]))
            else:
                parts = str(volume).split(":")
                targets.append(parts[1] if len(parts) > 1 else parts[0])
        return targets


def _list_item(item: str) -> tuple[str, str | None]:
    name, sep, value = item.partition("=")
    return name, value if sep else None


def read_services(path: Path) -> dict[str, ComposeService]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {name: ComposeService(name, spec or {}) for name, spec in document.get("services", {}).items()}
