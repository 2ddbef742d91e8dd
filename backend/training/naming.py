"""The names trained models get in the OCR service's store.

Every run gets a name of its own (``…-v<n>``): a run's model never overwrites the model in
use, so a worse one can stay in the store unadopted and the better one keeps serving.
Names follow the OCR service's rule: lower-case letters, digits and ``-``, at most 64.
"""

from __future__ import annotations

import hashlib

from backend.training.models import TrainingKind

MAX_NAME = 64


def model_name(kind: TrainingKind, prefix: str, sequence: int, writer_slug: str | None = None) -> str:
    suffix = f"-v{sequence}"
    if kind is TrainingKind.WRITER:
        if not writer_slug:
            raise ValueError("a writer run needs the writer's slug")
        stem = f"writer-{writer_slug}"
    elif kind is TrainingKind.SEGMENTATION:
        stem = f"{prefix}-seg"
    else:
        stem = prefix
    room = MAX_NAME - len(suffix)
    if len(stem) > room:
        # A long slug is cut, and a hash of the whole keeps two long names apart.
        digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
        stem = stem[: room - 9].rstrip("-") + "-" + digest
    return stem + suffix
