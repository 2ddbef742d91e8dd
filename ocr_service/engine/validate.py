"""Load a model file in a separate, short-lived process and describe it.

An untrusted or freshly trained file may crash or hang kraken's loader (a bad protobuf,
a huge tensor); doing it in a child process with a time limit keeps the service up.
Run as ``python -m ocr_service.engine.validate --address-space-mb N PATH``: prints the facts
as JSON. Its limits are settings (``OCR_MODEL_VALIDATION_*``), handed to the child as arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ocr_service.engine.inspect import ModelFacts, ModelFileError, read_model_facts
from ocr_service.settings import Settings


def model_checker(settings: Settings) -> Callable[[Path], ModelFacts]:
    """:func:`validate_model_file` with the limits the settings give."""
    return functools.partial(
        validate_model_file,
        timeout_s=settings.model_validation_timeout_s,
        address_space_mb=settings.model_validation_address_space_mb,
    )


def validate_model_file(path: Path, *, timeout_s: float, address_space_mb: int) -> ModelFacts:
    """The model's facts, or :class:`ModelFileError` saying plainly why it is refused."""
    command = [sys.executable, "-m", "ocr_service.engine.validate", "--address-space-mb", str(address_space_mb)]
    try:
        completed = subprocess.run(
            [*command, "--", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelFileError(f"loading the model took longer than {timeout_s:g} s; it was refused") from exc
    if completed.returncode == 0:
        data = json.loads(completed.stdout.strip().splitlines()[-1])
        return ModelFacts(**data)
    if completed.returncode == 3:
        raise ModelFileError(completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else "not a model")
    raise ModelFileError(f"the model loader crashed (exit code {completed.returncode}); the file was refused")


def _main(argv: list[str]) -> int:
    import resource

    parser = argparse.ArgumentParser(prog="python -m ocr_service.engine.validate")
    parser.add_argument("--address-space-mb", type=int, required=True)
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    # A model file must not be able to take the machine's memory while it is inspected.
    limit = args.address_space_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        facts = read_model_facts(args.path)
    except ModelFileError as exc:
        # One line: the parent reads the last line of the child's output as the reason.
        print(" ".join(str(exc).split()))
        return 3
    print(json.dumps(dataclasses.asdict(facts)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
