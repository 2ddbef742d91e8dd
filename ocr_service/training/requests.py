"""What a training request may ask for, judged before anything is unpacked."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocr_service import model_rules
from ocr_service.engine.train import spec_input_height
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import PACKAGED_SEGMENTATION
from ocr_service.settings import Settings
from ocr_service.store import ModelStore
from ocr_service.training.datasets import TrainingKind

_SPEC = re.compile(r"^\[[0-9A-Za-z,.()\s\-]+\]$")
MAX_SPEC_CHARS = 1000
MIN_LEARNING_RATE = 1e-7
MAX_LEARNING_RATE = 1.0


@dataclass(frozen=True)
class TrainingRequest:
    kind: TrainingKind
    model_name: str
    base_model: str | None = None
    epochs: int | None = None
    spec: str | None = None
    learning_rate: float | None = None


def check_training_request(request: TrainingRequest, settings: Settings, store: ModelStore) -> None:
    """Refuse a request that cannot run, with the reason; the data is judged later."""
    model_rules.check_new_model_name(request.model_name)
    if request.epochs is not None and not 1 <= request.epochs <= settings.training_max_epochs:
        raise AppError(ErrorCode.INVALID_REQUEST, f"epochs must lie between 1 and {settings.training_max_epochs}.")
    if request.learning_rate is not None and not MIN_LEARNING_RATE <= request.learning_rate <= MAX_LEARNING_RATE:
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            f"learningRate must lie between {MIN_LEARNING_RATE:g} and {MAX_LEARNING_RATE:g}.",
        )
    if request.spec is not None:
        _check_spec(request, settings.segtrain_height)
    if request.base_model is not None:
        _check_base(request, store)
    if store.file_of(request.model_name) is not None:
        # Training under an existing name makes a new version of it: the kind stays.
        model_rules.check_kind(request.model_name, store.entry(request.model_name).kind, request.kind)


def _check_spec(request: TrainingRequest, segtrain_height: int) -> None:
    assert request.spec is not None
    if len(request.spec) > MAX_SPEC_CHARS or not _SPEC.match(request.spec):
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            "spec must be a bracketed VGSL network description, e.g. '[1,48,0,1 ...]'.",
        )
    if request.base_model is not None:
        # kraken ignores the spec when it loads weights; refusing says so instead of silently ignoring it.
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            "spec describes a new network; it cannot go with baseModel (a loaded model keeps its own).",
        )
    if request.kind == "segmentation" and spec_input_height(request.spec) != segtrain_height:
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            f"A segmentation spec must declare the training height {segtrain_height} px "
            "as its input height ('[1,H,0,3 ...]').",
        )


def _check_base(request: TrainingRequest, store: ModelStore) -> None:
    base = model_rules.check_model_name(request.base_model or "")
    if base == PACKAGED_SEGMENTATION:
        model_rules.check_kind(base, "segmentation", request.kind)
    elif store.file_of(base) is None:
        raise AppError(
            ErrorCode.UNKNOWN_MODEL,
            f"There is no model named '{base}' to start from. Installed: {', '.join(store.names()) or 'none'}.",
        )
    else:
        model_rules.check_kind(base, store.entry(base).kind, request.kind)
