"""Plain facts about model files, shared by the store, the admin, training and the engine.

Nothing here imports kraken or torch: the store knows files and versions only, and the
engine (inside the worker processes) is the one place that loads what these name.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ModelKind = Literal["recognition", "segmentation"]
LineType = Literal["baselines", "bbox"]

# kraken's own formats that carry no pickle: CoreML (protobuf) and safetensors.
SAFETENSORS_SUFFIX = ".safetensors"
COREML_SUFFIX = ".mlmodel"
MODEL_SUFFIXES = (SAFETENSORS_SUFFIX, COREML_SUFFIX)

PACKAGED_SEGMENTATION = "blla"


def packaged_segmentation_model() -> Path:
    """The blla model inside the kraken wheel, found without importing kraken (and torch)."""
    spec = importlib.util.find_spec("kraken")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kraken is not installed: the packaged segmentation model cannot be found")
    return Path(next(iter(spec.submodule_search_locations))) / "blla.mlmodel"


def file_stamp(path: Path | str) -> tuple[int, int]:
    """What tells one version of a file from the next: (mtime_ns, size). ``copy2`` keeps it."""
    stat = os.stat(path)
    return (stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class ModelRef:
    """Which model file a page is read with.

    ``path`` is the file to load (for a document, its pinned copy, which never changes);
    ``stamp`` is that file's (mtime_ns, size), which workers cache the loaded model under;
    ``version`` is the store's version number, reported with the text it made.
    """

    name: str
    path: str
    stamp: tuple[int, int]
    version: int = 1

    @classmethod
    def of_file(cls, name: str, path: Path, version: int = 1) -> ModelRef:
        return cls(name=name, path=str(path), stamp=file_stamp(path), version=version)


class ModelFileError(Exception):
    """The file is not a model kraken can use."""


@dataclass(frozen=True)
class ModelFacts:
    kind: ModelKind
    line_type: LineType | None
    alphabet: str | None
    input_height: int | None
    accuracy: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def alphabet_size(self) -> int | None:
        return None if self.alphabet is None else len(self.alphabet)
