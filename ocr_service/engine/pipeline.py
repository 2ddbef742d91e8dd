"""One page through kraken: segment with blla, recognise each line, return plain dataclasses.

Runs inside a worker process (see ``ocr_service.pool``); nothing here knows about HTTP.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)


def packaged_segmentation_model() -> Path:
    """The blla model inside the kraken wheel: the source of truth when no other is usable."""
    return Path(str(resources.files("kraken").joinpath("blla.mlmodel")))


@dataclass(frozen=True)
class Line:
    index: int
    text: str
    confidence: float
    baseline: list[list[int]]
    polygon: list[list[int]]
    bbox: list[int]


@dataclass(frozen=True)
class PageResult:
    width: int
    height: int
    lines: list[Line]
    dropped_lines: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class RecognitionModelRef:
    """Which recognition model to use, and which version of its file (so workers reload on change)."""

    name: str
    path: str
    version: tuple[int, int]  # (mtime_ns, size) of the file


class WrongModelKindError(Exception):
    """The named model is not a recognition model (e.g. a segmentation model)."""


class ModelLoadError(Exception):
    """The model file could not be loaded by kraken."""


def _load_segmenter(path: Path) -> Any:
    from kraken.tasks import SegmentationTaskModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SegmentationTaskModel.load_model(path)


def load_segmentation_model(configured: Path | None) -> tuple[Any, Path]:
    """Load the configured segmentation model, restoring the packaged one if it is unusable.

    A missing file is restored from the kraken wheel; a file that kraken cannot load is
    moved aside (``*.unloadable-<time>``) and replaced by the packaged model. Both are
    logged as warnings with the reason: never a silent fallback. Workers start side by
    side, so the repair happens under a file lock.
    """
    packaged = packaged_segmentation_model()
    if configured is None:
        return _load_segmenter(packaged), packaged
    configured.parent.mkdir(parents=True, exist_ok=True)
    lock_path = configured.parent / ".segmentation-model.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not configured.exists():
            log.warning("segmentation model %s is missing: restoring the packaged model from %s", configured, packaged)
            _restore(packaged, configured)
        else:
            try:
                return _load_segmenter(configured), configured
            except (ValueError, KeyError, TypeError, RuntimeError, OSError, AttributeError) as exc:
                aside = configured.with_name(f"{configured.name}.unloadable-{int(time.time())}")
                log.warning(
                    "segmentation model %s cannot be loaded; moved it to %s and restored the packaged model",
                    configured,
                    aside,
                    exc_info=exc,
                )
                os.replace(configured, aside)
                _restore(packaged, configured)
        return _load_segmenter(configured), configured


def _restore(packaged: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(packaged, tmp)
    os.replace(tmp, target)


class Recognizer:
    def __init__(self, ref: RecognitionModelRef) -> None:
        from kraken.tasks import RecognitionTaskModel

        self.ref = ref
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.task = RecognitionTaskModel.load_model(ref.path)
            except ValueError as exc:
                if "No recognition model" in str(exc):
                    raise WrongModelKindError(f"'{ref.name}' is not a recognition model") from exc
                raise ModelLoadError(f"model '{ref.name}' cannot be loaded: {exc}") from exc
            except (KeyError, TypeError, RuntimeError, OSError, AttributeError) as exc:
                raise ModelLoadError(f"model '{ref.name}' cannot be loaded: {exc}") from exc
        # kraken says 'bbox' for models trained on line strips (ketos -f path) and
        # 'baseline' otherwise; feeding the other kind of line gives garbage without a warning.
        self.line_type = "bbox" if self.task.seg_type == "bbox" else "baselines"


class PageEngine:
    """The models of one worker process: one segmenter, a few recognisers cached by version."""

    def __init__(self, segmentation_model: Path | None, max_cached_recognizers: int = 2) -> None:
        from kraken.configs import RecognitionInferenceConfig, SegmentationInferenceConfig

        self.segmenter, self.segmentation_model_path = load_segmentation_model(segmentation_model)
        self._seg_config = SegmentationInferenceConfig(accelerator="cpu", device="auto")
        # num_line_workers=0: kraken would otherwise start its own process pool inside ours.
        self._rec_config = RecognitionInferenceConfig(accelerator="cpu", device="auto", num_line_workers=0)
        self._recognizers: OrderedDict[str, Recognizer] = OrderedDict()
        self._max_cached = max_cached_recognizers

    def recognizer(self, ref: RecognitionModelRef) -> Recognizer:
        cached = self._recognizers.get(ref.name)
        if cached is not None and cached.ref == ref:
            self._recognizers.move_to_end(ref.name)
            return cached
        self._recognizers.pop(ref.name, None)
        recognizer = Recognizer(ref)
        self._recognizers[ref.name] = recognizer
        while len(self._recognizers) > self._max_cached:
            self._recognizers.popitem(last=False)
        return recognizer

    def process(self, image: Image.Image, model: RecognitionModelRef | None) -> PageResult:
        started = time.perf_counter()
        recognizer = self.recognizer(model) if model is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            segmentation = self.segmenter.predict(image, self._seg_config)
        lines = list(segmentation.lines or [])
        # kraken #606: one line whose baseline has a single point aborts the whole page.
        usable = [ln for ln in lines if len(ln.baseline or []) >= 2 and len(ln.boundary or []) >= 3]
        dropped = len(lines) - len(usable)
        if dropped:
            log.warning("dropped %d degenerate line(s) (baseline with fewer than 2 points)", dropped)
        texts: list[tuple[str, float]] = [("", 0.0)] * len(usable)
        if recognizer is not None and usable:
            segmentation = replace(segmentation, lines=usable)
            feed = segmentation.to_bbox() if recognizer.line_type == "bbox" else segmentation
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                records = list(recognizer.task.predict(image, feed, self._rec_config))
            texts = [(r.prediction, _mean(r.confidences)) for r in records]
        result = [
            Line(
                index=i,
                text=text,
                confidence=confidence,
                baseline=[[int(x), int(y)] for x, y in line.baseline],
                polygon=[[int(x), int(y)] for x, y in line.boundary],
                bbox=_bbox(line.boundary),
            )
            for i, (line, (text, confidence)) in enumerate(zip(usable, texts, strict=True))
        ]
        return PageResult(
            width=image.width,
            height=image.height,
            lines=result,
            dropped_lines=dropped,
            seconds=time.perf_counter() - started,
        )


def _mean(values: list[float]) -> float:
    return round(float(sum(values) / len(values)), 4) if values else 0.0


def _bbox(points: list[tuple[float, float]] | list[list[float]]) -> list[int]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))]
