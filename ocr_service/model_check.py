"""``python -m ocr_service check-models``: the model store checked before the server starts.

The container's entrypoint (deploy/ocr-entrypoint.sh) runs it first, so a store the workers
could not read with stops the container with the reason, instead of a server that answers
/health and fails every page. It does what each worker does at start: load the segmentation
model (``OCR_SEGMENTATION_MODEL``), restoring the packaged one where that file is missing or
kraken cannot load it (moved aside, logged); see ``engine.pipeline.load_segmentation_model``.
"""

from __future__ import annotations

from pathlib import Path

from ocr_service.settings import Settings
from ocr_service.store import ModelStore


class ModelStoreError(Exception):
    """The store cannot serve OCR: its segmentation model can neither be loaded nor restored."""


def check_model_store(settings: Settings) -> Path:
    """The segmentation model file the workers will load, after any repair; raises ``ModelStoreError``."""
    # kraken (and torch) only here: importing this module costs nothing until the check runs.
    from ocr_service.engine.inspect import KRAKEN_LOAD_ERRORS
    from ocr_service.engine.pipeline import load_segmentation_model

    try:
        store = ModelStore(settings.models_dir, settings.default_model, segmentation_model=settings.segmentation_model)
        _, path = load_segmentation_model(store.configured_segmentation_file())
    except KRAKEN_LOAD_ERRORS as exc:
        raise ModelStoreError(f"the model store {settings.models_dir} cannot serve OCR: {exc}") from exc
    return path
