"""What a model file is: its kind, line type, alphabet and input height, read from its metadata."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from ocr_service.model_ref import (
    COREML_SUFFIX,
    MODEL_SUFFIXES,
    SAFETENSORS_SUFFIX,
    LineType,
    ModelFacts,
    ModelFileError,
    ModelKind,
)

__all__ = [
    "COREML_SUFFIX",
    "KRAKEN_LOAD_ERRORS",
    "MODEL_SUFFIXES",
    "SAFETENSORS_SUFFIX",
    "ModelFacts",
    "ModelFileError",
    "read_model_facts",
]

log = logging.getLogger(__name__)

# What kraken raises for a file it cannot load as a model (seen with kraken 7.1.1: a
# ValueError for the wrong kind or an unknown format, the others for damaged files).
KRAKEN_LOAD_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    KeyError,
    TypeError,
    RuntimeError,
    OSError,
    AttributeError,
)
# Reading a model's metadata may also index into lists that a damaged file leaves short.
_INSPECT_ERRORS: tuple[type[Exception], ...] = (*KRAKEN_LOAD_ERRORS, IndexError)


def _codec_alphabet(net: Any) -> str | None:
    codec = getattr(net, "codec", None)
    c2l = getattr(codec, "c2l", None)
    if not c2l:
        raw = net.user_metadata.get("codec") if hasattr(net, "user_metadata") else None
        if isinstance(raw, str):
            try:
                c2l = json.loads(raw)
            except ValueError:
                c2l = None
    if not c2l:
        return None
    return "".join(sorted(k for k in c2l if isinstance(k, str)))


def _accuracy(meta: dict[str, Any]) -> float | None:
    history = meta.get("accuracy")
    if isinstance(history, list) and history:
        last = history[-1]
        if isinstance(last, (list, tuple)) and len(last) == 2:
            try:
                return float(last[1])
            except (TypeError, ValueError):
                return None
    metrics = meta.get("metrics")
    if isinstance(metrics, list) and metrics:
        last = metrics[-1]
        if isinstance(last, (list, tuple)) and len(last) == 2 and isinstance(last[1], dict):
            value = last[1].get("val_accuracy")
            if isinstance(value, (int, float)):
                return float(value)
    return None


def read_model_facts(path: Path) -> ModelFacts:
    """Load ``path`` with kraken and describe it; raises :class:`ModelFileError` if it is no model.

    Only ``.mlmodel`` and ``.safetensors`` are read: neither format can carry code.
    """
    from kraken.models import load_models

    if path.suffix not in MODEL_SUFFIXES:
        raise ModelFileError(f"{path.name} is not a CoreML or safetensors model file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nets = load_models(path)
        except _INSPECT_ERRORS as exc:
            raise ModelFileError(f"kraken cannot load {path.name}: {exc}") from exc
    if not nets:
        raise ModelFileError(f"{path.name} contains no model")
    recognition = [n for n in nets if "recognition" in n.model_type]
    segmentation = [n for n in nets if "segmentation" in n.model_type]
    if recognition:
        net = recognition[0]
        kind: ModelKind = "recognition"
        line_type: LineType | None = "bbox" if net.seg_type == "bbox" else "baselines"
        alphabet = _codec_alphabet(net)
    elif segmentation:
        net = segmentation[0]
        kind = "segmentation"
        line_type = None
        alphabet = None
    else:
        raise ModelFileError(f"{path.name} is neither a recognition nor a segmentation model")
    shape = getattr(net, "input", None)
    # kraken orders the input shape (batch, channels, height, width)
    height = int(shape[2]) if isinstance(shape, (tuple, list)) and len(shape) == 4 and shape[2] else None
    meta = dict(getattr(net, "user_metadata", {}) or {})
    return ModelFacts(
        kind=kind,
        line_type=line_type,
        alphabet=alphabet,
        input_height=height,
        accuracy=_accuracy(meta),
        metadata={k: meta[k] for k in ("vgsl", "hyper_params") if k in meta},
    )
