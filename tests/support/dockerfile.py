"""What a Dockerfile gives its container: environment, user, working folder, command, volumes.

Multi-stage files: the image is the last stage; ``COPY --from=`` another stage is kept apart
from what is copied out of the build context (``context_copies`` lists those of every stage).

No Docker engine runs on the build machines, so the tests read the Dockerfile itself and
reproduce the container's start from it (tests/test_image.py).
"""

from __future__ import annotations

import json
import re
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
    healthcheck: str | None = None
    # Every stage's base image (ARG defaults substituted), the last one the image's own.
    bases: list[str] = field(default_factory=list)
    # Sources copied from the build context by any stage (the build stage's pyproject.toml too).
    context_copies: list[str] = field(default_factory=list)
    stage_copies: list[tuple[str, str]] = field(default_factory=list)
    # Every stage's RUN commands (``runs`` holds the last stage's only).
    every_run: list[str] = field(default_factory=list)


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


def _substitute(text: str, arguments: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: arguments.get(m[1] or m[2], m[0]), text)


def read_image(path: Path) -> Image:
    image = Image()
    arguments: dict[str, str] = {}
    bases: list[str] = []
    context: list[str] = []
    every_run: list[str] = []
    for keyword, arguments_text in _instructions(path.read_text(encoding="utf-8")):
        if keyword == "ARG":
            name, _, default = arguments_text.partition("=")
            arguments.setdefault(name, default)
        elif keyword == "FROM":
            bases.append(_substitute(arguments_text.split()[0], arguments))
            image = Image()
        elif keyword == "ENV":
            for pair in shlex.split(arguments_text):
                name, sep, value = pair.partition("=")
                assert sep, f"{path.name}: ENV {pair!r} is not NAME=value"
                image.env[name] = value
        elif keyword == "USER":
            image.user = arguments_text
        elif keyword == "WORKDIR":
            image.workdir = image.workdir / arguments_text
        elif keyword == "CMD":
            image.cmd = _json_or_words(arguments_text)
        elif keyword == "VOLUME":
            image.volumes.extend(PurePosixPath(v) for v in _json_or_words(arguments_text))
        elif keyword == "COPY":
            *sources, target = arguments_text.split()
            stage = next((s.removeprefix("--from=") for s in sources if s.startswith("--from=")), None)
            plain = [s for s in sources if not s.startswith("--")]
            if stage is None:
                image.copies.append((plain, target))
                context.extend(plain)
            else:
                image.stage_copies.extend((stage, source) for source in plain)
        elif keyword == "RUN":
            image.runs.append(arguments_text)
            every_run.append(arguments_text)
        elif keyword == "HEALTHCHECK":
            image.healthcheck = arguments_text
    image.bases, image.context_copies, image.every_run = bases, context, every_run
    return image
