"""What a Dockerfile gives its container: environment, user, working folder, command, volumes.

No Docker engine runs on the build machines, so the tests read the Dockerfile itself and
reproduce the container's start from it (tests/test_image.py).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass
class Image:
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    cmd: list[str] = field(default_factory=list)
    volumes: list[PurePosixPath] = field(default_factory=list)
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def _json_or_words(arguments: str) -> list[str]:
    if arguments.startswith("["):
        value = json.loads(arguments)
        assert isinstance(value, list) and all(isinstance(item, str) for item in value)
        return value
    return arguments.split()


def read_image(path: Path) -> Image:
    image = Image()
    for keyword, arguments in _instructions(path.read_text(encoding="utf-8")):
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, sep, value = pair.partition("=")
                assert sep, f"{path.name}: ENV {pair!r} is not NAME=value"
                image.env[name] = value
        elif keyword == "USER":
            image.user = arguments
        elif keyword == "WORKDIR":
            image.workdir = image.workdir / arguments
        elif keyword == "CMD":
            image.cmd = _json_or_words(arguments)
        elif keyword == "VOLUME":
            image.volumes.extend(PurePosixPath(v) for v in _json_or_words(arguments))
        elif keyword == "COPY":
            *sources, target = arguments.split()
            image.copies.append(([s for s in sources if not s.startswith("--")], target))
        elif keyword == "RUN":
            image.runs.append(arguments)
    return image
