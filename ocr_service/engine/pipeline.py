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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from PIL import Image

from ocr_service.engine.device import check_device, parse_device
from ocr_service.engine.inspect import KRAKEN_LOAD_ERRORS
from ocr_service.model_ref import ModelRef, file_stamp, packaged_segmentation_model

__all__ = ["Line", "ModelCache", "ModelRef", "PageEngine", "PageResult", "packaged_segmentation_model"]

log = logging.getLogger(__name__)


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
    # The stages of ``seconds``, and the models loaded for this page (the worker's cache
    # missed): the service process counts them (ocr_service/metrics.py).
    segmentation_seconds: float = 0.0
    recognition_seconds: float = 0.0
    models_loaded: int = 0


M = TypeVar("M")


class ModelCache(Generic[M]):
    """The last few models a worker used, by name; another version of a model is loaded again.

    A document's models arrive as pinned files (see ``ocr_service.model_pins``), each with
    the stamp of the file it names; the loaders check that stamp against the file they
    read, so a model is cached under the version it was really loaded from.
    """

    def __init__(self, load: Callable[[ModelRef], M], size: int) -> None:
        self._load = load
        self._size = size
        self._models: OrderedDict[str, tuple[ModelRef, M]] = OrderedDict()
        # Models loaded by ``get`` since this cache was made (not those ``put`` in).
        self.loads = 0

    def get(self, ref: ModelRef) -> M:
        cached = self._models.get(ref.name)
        if cached is not None and cached[0].stamp == ref.stamp:
            self._models.move_to_end(ref.name)
            return cached[1]
        # Drop the old version first: two copies of a model need not sit in memory at once.
        self._models.pop(ref.name, None)
        model = self._load(ref)
        self.loads += 1
        return self.put(ref, model)

    def put(self, ref: ModelRef, model: M) -> M:
        self._models[ref.name] = (ref, model)
        self._models.move_to_end(ref.name)
        while len(self._models) > self._size:
            self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        self._models.clear()


class WrongModelKindError(Exception):
    """The named model is not a recognition model (e.g. a segmentation model)."""


class ModelLoadError(Exception):
    """The model file could not be loaded by kraken."""


class SegmentationModelError(Exception):
    """The segmentation model chosen for OCR cannot be loaded (or is no segmentation model)."""


def _load_segmenter(path: Path) -> Any:
    from kraken.tasks import SegmentationTaskModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SegmentationTaskModel.load_model(path)


def _load_task(
    task_class: Any, kind: str, ref: ModelRef, wrong_kind: type[Exception], unloadable: type[Exception]
) -> Any:
    """``task_class.load_model(ref.path)`` with kraken's failures turned into ours; ``kind`` is
    the word kraken uses when the file holds no such model ("No <kind> model(s) in …")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            before = file_stamp(ref.path)
            model = task_class.load_model(ref.path)
            after = file_stamp(ref.path)
        except KRAKEN_LOAD_ERRORS as exc:
            if isinstance(exc, ValueError) and f"No {kind} model" in str(exc):
                raise wrong_kind(f"'{ref.name}' is not a {kind} model") from exc
            raise unloadable(f"the {kind} model '{ref.name}' cannot be loaded: {exc}") from exc
    # The cache files the model under ref.stamp: only true if that is the file that was read.
    if before != ref.stamp or after != ref.stamp:
        raise unloadable(f"the file of the {kind} model '{ref.name}' changed while it was loaded")
    return model


def _segmenter_for(ref: ModelRef) -> Any:
    from kraken.tasks import SegmentationTaskModel

    return _load_task(SegmentationTaskModel, "segmentation", ref, SegmentationModelError, SegmentationModelError)


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
            except KRAKEN_LOAD_ERRORS as exc:
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


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread for the block. kraken builds a network with random orthogonal
    weights before it loads the real ones, a QR decomposition per layer on torch's thread
    pool; workers that start side by side, each with a pool the size of the machine, spin
    waiting on each other's threads (blla in two workers on two cores: 4.9 s each instead of
    0.65 s on one thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _restore(packaged: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(packaged, tmp)
    os.replace(tmp, target)


class Recognizer:
    def __init__(self, ref: ModelRef) -> None:
        from kraken.tasks import RecognitionTaskModel

        self.ref = ref
        self.task = _load_task(RecognitionTaskModel, "recognition", ref, WrongModelKindError, ModelLoadError)
        # kraken says 'bbox' for models trained on line strips (ketos -f path) and
        # 'baseline' otherwise; feeding the other kind of line gives garbage without a warning.
        self.line_type = "bbox" if self.task.seg_type == "bbox" else "baselines"


class PageEngine:
    """The models of one worker process, each cached by file version.

    The segmentation model loaded at start (``OCR_SEGMENTATION_MODEL``, repaired if need be,
    or the packaged one) serves pages sent without a segmentation model; a page may name
    another one (the store's choice), which is loaded on first use and again when its file
    changes, so a newly trained or chosen segmenter is used without a restart.
    """

    def __init__(self, segmentation_model: Path | None, max_cached_models: int = 2, *, device: str = "cpu") -> None:
        from kraken.configs import RecognitionInferenceConfig, SegmentationInferenceConfig

        where = parse_device(device)
        # In the worker too: a worker whose GPU went away says so at start, not on each page.
        check_device(where)

        with _one_thread():
            segmenter, path = load_segmentation_model(segmentation_model)
        self.segmentation_model_path = path
        self._startup_segmentation = ModelRef.of_file(path.stem, path)
        self._segmenters: ModelCache[Any] = ModelCache(_segmenter_for, max_cached_models)
        self._segmenters.put(self._startup_segmentation, segmenter)
        self._seg_config = SegmentationInferenceConfig(accelerator=where.accelerator, device=where.lightning_devices)
        # num_line_workers=0: kraken would otherwise start its own process pool inside ours.
        self._rec_config = RecognitionInferenceConfig(
            accelerator=where.accelerator, device=where.lightning_devices, num_line_workers=0
        )
        self._recognizers: ModelCache[Recognizer] = ModelCache(Recognizer, max_cached_models)
        self._threads = 0

    def use_threads(self, threads: int) -> None:
        """Run the next pages on ``threads`` cores: torch's intra-op pool and the BLAS/OpenMP
        pools of numpy and scipy (kraken's ``num_threads`` setting is never applied, kraken #528).
        Cheap when the number is unchanged, so the pool may set it for every page."""
        if threads == self._threads:
            return
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        # Looks the libraries up again each time: scipy may have loaded another BLAS since.
        threadpool_limits(limits=threads)
        self._threads = threads

    def recognizer(self, ref: ModelRef) -> Recognizer:
        return self._recognizers.get(ref)

    def segmenter(self, ref: ModelRef | None) -> Any:
        return self._segmenters.get(ref or self._startup_segmentation)

    def process(
        self, image: Image.Image, model: ModelRef | None, segmentation_model: ModelRef | None = None
    ) -> PageResult:
        started = time.perf_counter()
        loads_before = self._segmenters.loads + self._recognizers.loads
        segmenter = self.segmenter(segmentation_model)
        recognizer = self.recognizer(model) if model is not None else None
        loaded = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            segmentation = segmenter.predict(image, self._seg_config)
        segmented = time.perf_counter()
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
        recognised = time.perf_counter()
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
            segmentation_seconds=segmented - loaded,
            recognition_seconds=recognised - segmented,
            models_loaded=self._segmenters.loads + self._recognizers.loads - loads_before,
        )


def _mean(values: list[float]) -> float:
    return round(float(sum(values) / len(values)), 4) if values else 0.0


def _bbox(points: list[tuple[float, float]] | list[list[float]]) -> list[int]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))]
