"""Load a model file in a separate, short-lived process and describe it.

An untrusted or freshly trained file may crash or hang kraken's loader (a bad protobuf,
a huge tensor); doing it in a child process with a time limit keeps the service up.
Run as ``python -m ocr_service.engine.validate PATH``: prints the facts as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from ocr_service.engine.inspect import ModelFacts, ModelFileError, read_model_facts

DEFAULT_TIMEOUT_S = 120.0
_MEMORY_LIMIT_BYTES = 4 * 1024**3


def validate_model_file(path: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> ModelFacts:
    """The model's facts, or :class:`ModelFileError` saying plainly why it is refused."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "ocr_service.engine.validate", str(path)],
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

    # A model file must not be able to take the machine's memory while it is inspected.
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT_BYTES * 4, _MEMORY_LIMIT_BYTES * 4))
    try:
        facts = read_model_facts(Path(argv[0]))
    except ModelFileError as exc:
        # One line: the parent reads the last line of the child's output as the reason.
        print(" ".join(str(exc).split()))
        return 3
    print(json.dumps(dataclasses.asdict(facts)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
