"""The kraken engine without HTTP: line types, degenerate lines, the segmentation model's repair."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kraken.containers import BaselineLine, Segmentation

from ocr_service.engine.pipeline import (
    ModelCache,
    ModelRef,
    PageEngine,
    Recognizer,
    SegmentationModelError,
    load_segmentation_model,
    packaged_segmentation_model,
)
from tests.support.synthetic import page_texts, render_page


class _Record:
    def __init__(self, text: str) -> None:
        self.prediction = text
        self.confidences = [0.5, 1.0]


class _RecordingTask:
    """Stands in for kraken's recogniser and notes which kind of lines it was given."""

    def __init__(self) -> None:
        self.fed: list[Segmentation] = []

    def predict(self, image: Any, segmentation: Segmentation, config: Any) -> list[_Record]:
        self.fed.append(segmentation)
        return [_Record(f"line {i}") for i, _ in enumerate(segmentation.lines)]


def recorder(line_type: str) -> Recognizer:
    recognizer = Recognizer.__new__(Recognizer)
    recognizer.ref = ModelRef("fake", "/nowhere", (0, 0))
    recognizer.task = _RecordingTask()
    recognizer.line_type = line_type
    return recognizer


class _FixedSegmenter:
    def __init__(self, segmentation: Segmentation) -> None:
        self.segmentation = segmentation

    def predict(self, image: Any, config: Any) -> Segmentation:
        return self.segmentation


def line(id_: str, baseline: list[list[int]]) -> BaselineLine:
    return BaselineLine(id=id_, baseline=baseline, boundary=[[10, 10], [200, 10], [200, 40], [10, 40]])


@pytest.fixture(scope="module")
def engine() -> PageEngine:
    return PageEngine(None)


def engine_with(engine: PageEngine, segmentation: Segmentation, recognizer: Recognizer) -> PageEngine:
    engine._segmenters.put(engine._startup_segmentation, _FixedSegmenter(segmentation))
    engine._recognizers.clear()
    engine._recognizers.put(recognizer.ref, recognizer)
    return engine


SEGMENTATION = Segmentation(
    type="baselines",
    imagename="page",
    text_direction="horizontal-lr",
    script_detection=False,
    lines=[line("a", [[10, 30], [200, 30]]), line("b", [[10, 80], [200, 80]])],
)


@pytest.mark.parametrize(("line_type", "fed_type"), [("bbox", "bbox"), ("baselines", "baselines")])
def test_each_model_is_fed_the_line_type_it_was_trained_on(engine: PageEngine, line_type: str, fed_type: str) -> None:
    recognizer = recorder(line_type)
    page = render_page(page_texts(1, 2), width=300, height=200, font_size=20, margin=10).image
    result = engine_with(engine, SEGMENTATION, recognizer).process(page, recognizer.ref)
    [fed] = recognizer.task.fed
    assert fed.type == fed_type
    assert [ln.text for ln in result.lines] == ["line 0", "line 1"]
    assert result.lines[0].confidence == 0.75


def test_a_single_point_baseline_is_dropped_before_recognition(engine: PageEngine) -> None:
    degenerate = Segmentation(
        type="baselines",
        imagename="page",
        text_direction="horizontal-lr",
        script_detection=False,
        lines=[line("a", [[10, 30], [200, 30]]), line("b", [[50, 80]]), line("c", [[10, 120], [200, 120]])],
    )
    recognizer = recorder("baselines")
    page = render_page(page_texts(1, 2), width=300, height=200, font_size=20, margin=10).image
    result = engine_with(engine, degenerate, recognizer).process(page, recognizer.ref)
    assert result.dropped_lines == 1
    assert len(recognizer.task.fed[0].lines) == 2
    assert [ln.index for ln in result.lines] == [0, 1]


def test_a_missing_segmentation_model_is_restored_from_the_wheel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configured = tmp_path / "models" / "seg.mlmodel"
    with caplog.at_level(logging.WARNING):
        _, used = load_segmentation_model(configured)
    assert used == configured
    assert configured.read_bytes() == packaged_segmentation_model().read_bytes()
    assert "missing" in caplog.text


def test_an_unloadable_segmentation_model_is_moved_aside_and_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configured = tmp_path / "seg.mlmodel"
    configured.write_bytes(b"this is not a model")
    with caplog.at_level(logging.WARNING):
        _, used = load_segmentation_model(configured)
    assert used == configured
    assert configured.read_bytes() == packaged_segmentation_model().read_bytes()
    [aside] = tmp_path.glob("seg.mlmodel.unloadable-*")
    assert aside.read_bytes() == b"this is not a model"
    assert "cannot be loaded" in caplog.text
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_the_model_cache_reloads_a_file_whose_version_changed_and_keeps_only_the_last_few() -> None:
    loads: list[ModelRef] = []

    def load(ref: ModelRef) -> str:
        loads.append(ref)
        return f"{ref.name}@{ref.stamp}"

    cache: ModelCache[str] = ModelCache(load, size=2)
    a1, a2, b, c = (
        ModelRef("a", "/m/a", (1, 1)),
        ModelRef("a", "/m/a", (2, 1)),
        ModelRef("b", "/m/b", (1, 1)),
        ModelRef("c", "/m/c", (1, 1)),
    )
    assert cache.get(a1) == cache.get(a1) == "a@(1, 1)"
    assert cache.get(a2) == "a@(2, 1)"  # the same file, a new version
    cache.get(b)
    cache.get(c)  # a is the least recently used: dropped
    cache.get(a2)
    assert loads == [a1, a2, b, c, a2]


def test_a_segmentation_model_named_per_page_is_loaded_and_a_wrong_kind_is_refused(
    tmp_path: Path, tiny_model: Path
) -> None:
    engine = PageEngine(None)
    # Tall: blla scales pages to 1800 px height, a 400x200 page to 3600 px wide (8x the work).
    page = render_page(page_texts(1, 2), width=400, height=1600, font_size=24, margin=10).image
    copy = tmp_path / "seg.mlmodel"
    copy.write_bytes(packaged_segmentation_model().read_bytes())
    result = engine.process(page, None, ModelRef.of_file("seg", copy))
    assert len(result.lines) >= 1
    with pytest.raises(SegmentationModelError, match="'reader' is not a segmentation model"):
        engine.process(page, None, ModelRef.of_file("reader", tiny_model))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(SegmentationModelError, match="cannot be loaded"):
        engine.process(page, None, ModelRef.of_file("garbage", garbage))
    # A file that is not the version the reference names is never cached under that version.
    stale = ModelRef.of_file("seg2", copy)
    stale = ModelRef(stale.name, stale.path, (stale.stamp[0] - 1, stale.stamp[1]))
    with pytest.raises(SegmentationModelError, match="changed while it was loaded"):
        engine.process(page, None, stale)


WORKER = r"""
import re, sys, time
from ocr_service.workers.messages import PageTask, PageTimeLimit
from ocr_service.workers.process import run_page

class Engine:
    def use_threads(self, threads):
        pass

    def process(self, *args):
        if sys.argv[1] == "stuck":
            # catastrophic backtracking: C code that holds the GIL for far longer than the limit
            re.match(r"(a+)+$", "a" * 64 + "b")

done = run_page(Engine(), PageTask(1, None, None, None, 1, PageTimeLimit(1.0, sys.argv[2])))
assert done.error is None, done.error
time.sleep(2)  # the limit has passed: a watchdog left armed would end the process now
"""


def run_worker(mode: str, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(report)], capture_output=True, text=True, timeout=120
    )


def test_a_stuck_page_ends_its_worker_process_and_reports_where_it_hung(tmp_path: Path) -> None:
    report = tmp_path / "page.stacks"
    ended = run_worker("stuck", report)
    assert ended.returncode != 0
    stacks = report.read_text()
    assert stacks.startswith("Timeout")
    assert "in process" in stacks  # the stack of the stuck call, for the operator's log


def test_a_page_within_the_limit_disarms_the_watchdog_and_leaves_no_report(tmp_path: Path) -> None:
    report = tmp_path / "page.stacks"
    finished = run_worker("quick", report)
    assert finished.returncode == 0, finished.stderr
    assert not report.exists()
