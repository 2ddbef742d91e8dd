"""GPU check: the OCR service's kraken code on ``OCR_DEVICE=cuda``, against the CPU of the same machine.

    python bench/gpu_check.py --device cuda --compare cpu --out gpu.json [--models .gpu] [--pages 3]
        [--rec-pages 20] [--rec-epochs 3] [--seg-pages 4] [--seg-epochs 2] [--budget-s 300]
    .venv/bin/python bench/gpu_check.py --prepare --device cpu --compare none --out gpu.json   (here)

The GPU path (``ocr_service/engine/device.py``) is tested here only with torch's view of CUDA
replaced (tests/ocr_service/test_device.py); this script runs it for real, on a machine with a GPU:

1. OCR: ``PageEngine(None, device=...)`` (blla's packaged segmentation model) with the tiny test
   recognition model on generated tall letter pages (800 x 3200, as tests/ocr_service/test_ocr_api.py),
   on ``--device`` and on ``--compare``: seconds per page, lines, where each model's weights lie,
   and whether both devices find the same lines (baselines within a few px) and read the same text.
2. Training: ``fit(TrainingPlan(device=...))`` fine-tuning the tiny baselines model on generated
   PAGE XML pages (recognition), and a segmentation network from scratch at 800 px (as the
   service does); the best checkpoint is converted (``convert_checkpoint``) and the converted
   model loaded again on the device: the recognition model reads a page, the segmentation
   model counts lines (``count_lines``). Seconds per epoch on both devices.
3. The service: ``python -m ocr_service`` with ``OCR_DEVICE`` and one worker answers ``POST /ocr``
   for one page; ``nvidia-smi`` says whether its worker holds GPU memory.

The models are not trained here: ``--models DIR`` holds ``tiny.safetensors``,
``tiny-baselines.safetensors`` (tests/support/models.py) and ``DejaVuSans.ttf`` (the pages' font,
which the models were trained on; a GPU machine may have none). ``--prepare`` copies them there
from the test cache (training the models first if they are not cached: minutes).

Steps that start after ``--budget-s`` seconds are skipped (and say so), so a run inside a time
limit still reports what it did; the JSON is rewritten after every step. Exit code 1 when any
check failed (the reasons are printed and listed under ``problems``), 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_service.engine.device import parse_device  # noqa: E402
from ocr_service.engine.pipeline import ModelRef, PageEngine, PageResult  # noqa: E402
from ocr_service.engine.train import (  # noqa: E402
    SEGMENTATION_SPEC,
    TrainingPlan,
    convert_checkpoint,
    count_lines,
    fit,
)
from ocr_service.training.checkpoints import best_checkpoint  # noqa: E402
from tests.support.synthetic import _DEJAVU, RenderedPage, edit_distance, page_texts, render_page, to_png  # noqa: E402
from tests.support.training_data import page_xml  # noqa: E402

log = logging.getLogger("gpu_check")
T = TypeVar("T")

RECOGNITION_MODEL = "tiny.safetensors"
BASELINE_MODEL = "tiny-baselines.safetensors"
FONT = "DejaVuSans.ttf"
# The test letters (tests/ocr_service/test_ocr_api.py): tall pages, since blla reads every page at
# 1800 px height and a page's cost grows with the width it is scaled to.
LETTER_SIZE = (800, 3200)
LETTER_FONT_SIZE = 36
LETTER_LINE_GAP = 2.0
# The training pages of tests/support/training_data.py's page_set.
TRAINING_PAGE_SIZE = (900, 600)
TRAINING_LINES_PER_PAGE = 4
SEGMENTATION_HEIGHT = 800  # OCR_SEGTRAIN_HEIGHT's default
# Where the device under test and the CPU may differ: float sums in another order move a
# baseline by a pixel or two; more is another segmentation.
BASELINE_SHIFT_WARN_PX = 5
BASELINE_SHIFT_FAIL_PX = 20
TEXT_CER_FAIL = 0.1  # between the two devices' readings of the same lines
READABLE = 0.25  # against the truth, as tests/ocr_service/test_ocr_api.py
SERVICE_START_S = 120.0


class CheckFailedError(Exception):
    """A check whose result is wrong (as opposed to a step that crashed)."""


@dataclass(frozen=True)
class Models:
    recognition: Path
    baselines: Path
    font: Path


# --- setup -------------------------------------------------------------------------------------


def prepare_models(folder: Path) -> None:
    """Copy the test models (trained here if not cached yet) and the pages' font into ``folder``."""
    from tests.support.models import tiny_baseline_model, tiny_recognition_model

    folder.mkdir(parents=True, exist_ok=True)
    for source, name in ((tiny_recognition_model(), RECOGNITION_MODEL), (tiny_baseline_model(), BASELINE_MODEL)):
        shutil.copyfile(source, folder / name)
    if not _DEJAVU.exists():
        raise SystemExit(f"{_DEJAVU} is missing here: the pages' font cannot be copied")
    shutil.copyfile(_DEJAVU, folder / FONT)


def find_models(folder: Path) -> Models:
    models = Models(folder / RECOGNITION_MODEL, folder / BASELINE_MODEL, folder / FONT)
    missing = [str(p) for p in (models.recognition, models.baselines, models.font) if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run this script with --prepare where the test models are")
    return models


def environment(device: str) -> dict[str, Any]:
    """Versions against the project's pins and kraken's own requirements, and the GPU."""
    import torch
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in [*project["dependencies"], *project["optional-dependencies"]["ocr"]]:
        requirement = Requirement(spec)
        pins[requirement.name] = str(requirement.specifier)
    for spec in importlib.metadata.requires("kraken") or []:
        requirement = Requirement(spec)
        if requirement.marker is None:
            pins.setdefault(requirement.name, str(requirement.specifier))
    versions: dict[str, str] = {}
    mismatches = []
    absent = []
    for name, specifier in sorted(pins.items()):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            # kraken declares some it never imports on these paths (htrmopo, jsonschema: its model repository).
            absent.append(name)
            continue
        versions[name] = version
        if not Requirement(f"{name}{specifier}").specifier.contains(version, prereleases=True):
            mismatches.append(f"{name} {version} (wanted {specifier})")
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torchPin": pins.get("torch"),
        "torchCuda": torch.version.cuda,
        "cudaAvailable": torch.cuda.is_available(),
        "versions": versions,
        "versionMismatches": mismatches,
        "notInstalled": absent,
        # Carried wheels come first on PYTHONPATH; this shows which copy was really imported.
        "importedFrom": {name: _module_file(name) for name in ("kraken", "lightning", "torch", "fastapi")},
    }
    where = parse_device(device)
    if where.index is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(where.index)
        report["gpu"] = {
            "name": props.name,
            "memoryGiB": round(props.total_memory / 1024**3, 1),
            "capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
        }
    return report


def _module_file(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        return f"not importable: {exc}"
    return str(Path(module.__file__).parent) if module.__file__ else None


# --- pages -------------------------------------------------------------------------------------


def letter_pages(count: int, lines: int, font: Path) -> list[RenderedPage]:
    width, height = LETTER_SIZE
    return [
        render_page(
            page_texts(300 + n, lines, 5),
            width=width,
            height=height,
            font_size=LETTER_FONT_SIZE,
            line_gap=LETTER_LINE_GAP,
            font_file=font,
        )
        for n in range(count)
    ]


def write_training_pages(folder: Path, count: int, seed: int, font: Path) -> list[Path]:
    """PAGE XML pages as tests/support/training_data.py's ``page_set``, drawn in ``font``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n in range(count):
        texts = page_texts(seed * 1000 + n, TRAINING_LINES_PER_PAGE, words=4)
        page = render_page(
            texts,
            width=TRAINING_PAGE_SIZE[0],
            height=TRAINING_PAGE_SIZE[1],
            font_size=36,
            margin=40,
            line_gap=2.2,
            font_file=font,
        )
        (folder / f"page{n:03d}.png").write_bytes(to_png(page.image))
        xml = folder / f"page{n:03d}.xml"
        xml.write_text(page_xml(page, f"page{n:03d}.png"), encoding="utf-8")
        written.append(xml)
    return written


# --- comparing readings ------------------------------------------------------------------------


def _mean_y(points: list[list[int]] | list[tuple[int, int]]) -> float:
    return sum(p[1] for p in points) / len(points)


def truth_cer(pages: list[RenderedPage], results: list[PageResult]) -> float:
    """The reading against the drawn text, row by row: blla may cut a printed line in pieces."""
    edits = chars = 0
    tolerance = LETTER_FONT_SIZE * LETTER_LINE_GAP / 2
    for page, result in zip(pages, results, strict=True):
        for drawn in page.lines:
            y = _mean_y(drawn.baseline)
            pieces = sorted((ln for ln in result.lines if abs(_mean_y(ln.baseline) - y) < tolerance), key=_left)
            edits += edit_distance(" ".join(ln.text for ln in pieces), drawn.text)
            chars += len(drawn.text)
    return round(edits / max(1, chars), 4)


def _left(line: Any) -> float:
    return float(min(p[0] for p in line.baseline))


def compare_readings(tested: list[PageResult], reference: list[PageResult]) -> dict[str, Any]:
    """Lines of the same pages read on two devices, paired by baseline: counts, shifts, text."""
    counts = []
    unpaired = 0
    shifts: list[float] = []
    edits = chars = 0
    for a, b in zip(tested, reference, strict=True):
        counts.append([len(a.lines), len(b.lines)])
        free = list(b.lines)
        for line in a.lines:
            if not free:
                unpaired += 1
                continue
            nearest = min(free, key=lambda other: _baseline_shift(line.baseline, other.baseline))
            shift = _baseline_shift(line.baseline, nearest.baseline)
            if shift > BASELINE_SHIFT_FAIL_PX * 3:
                unpaired += 1
                continue
            free.remove(nearest)
            shifts.append(shift)
            edits += edit_distance(line.text, nearest.text)
            chars += max(1, len(nearest.text))
        unpaired += len(free)
    return {
        "lineCounts": counts,
        "unpairedLines": unpaired,
        "maxBaselineShiftPx": round(max(shifts), 1) if shifts else None,
        "meanBaselineShiftPx": round(statistics.mean(shifts), 2) if shifts else None,
        "textCer": round(edits / chars, 4) if chars else None,
    }


def _baseline_shift(a: list[list[int]], b: list[list[int]]) -> float:
    """How far apart two baselines' ends are (px): the larger of start and end distances."""
    return max(_distance(a[0], b[0]), _distance(a[-1], b[-1]))


def _distance(p: list[int], q: list[int]) -> float:
    return float(((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) ** 0.5)


def judge_readings(comparison: dict[str, Any], device: str, reference: str) -> list[str]:
    problems = []
    if any(a == 0 for a, _ in comparison["lineCounts"]):
        problems.append(f"{device} found no lines on a page ({reference} found {comparison['lineCounts']})")
    if any(abs(a - b) > 1 for a, b in comparison["lineCounts"]):
        problems.append(f"{device} and {reference} found different numbers of lines: {comparison['lineCounts']}")
    if comparison["unpairedLines"] > len(comparison["lineCounts"]):
        problems.append(f"{comparison['unpairedLines']} lines found on one device lie on no line of the other")
    shift = comparison["maxBaselineShiftPx"]
    if shift is not None and shift > BASELINE_SHIFT_FAIL_PX:
        problems.append(f"a baseline found on {device} lies {shift} px from {reference}'s")
    if comparison["textCer"] is not None and comparison["textCer"] > TEXT_CER_FAIL:
        problems.append(f"{device} reads the same lines differently from {reference}: CER {comparison['textCer']}")
    return problems


# --- the steps ---------------------------------------------------------------------------------


def gpu_peak(device: str, reset: bool = False) -> float | None:
    """Peak GPU memory (MiB) allocated by this process since the last reset; None on the CPU."""
    import torch

    where = parse_device(device)
    if where.index is None:
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats(where.index)
        return None
    return round(torch.cuda.max_memory_allocated(where.index) / 1024**2, 1)


def _placement(module: Any) -> str:
    return str(next(module.parameters()).device)


def on_device(placed: str, device: str) -> bool:
    """Whether torch's name of where weights lie (``cpu``, ``cuda:0``) is ``device``."""
    return placed == device or (device == "cpu" and placed.startswith("cpu"))


def read_pages(
    device: str, pages: list[RenderedPage], models: Models, threads: int
) -> tuple[dict[str, Any], list[PageResult], PageEngine]:
    gpu_peak(device, reset=True)
    started = time.perf_counter()
    engine = PageEngine(None, device=device)
    engine.use_threads(threads)
    loaded = time.perf_counter()
    tiny = ModelRef.of_file("tiny", models.recognition)
    baselines = ModelRef.of_file("tiny-baselines", models.baselines)
    # The first page loads the recognition model and pays the device's first-call costs.
    first = engine.process(pages[0].image, tiny)
    warmed = time.perf_counter()
    results = [engine.process(page.image, tiny) for page in pages]
    seconds = [r.seconds for r in results]
    baseline_model = engine.process(pages[0].image, baselines)
    report = {
        "engineStartSeconds": round(loaded - started, 2),
        "firstPageSeconds": round(warmed - loaded, 2),
        "firstPageLines": len(first.lines),
        "secondsPerPage": round(statistics.mean(seconds), 3),
        "pageSeconds": [round(s, 3) for s in seconds],
        "segmentationSecondsPerPage": round(statistics.mean(r.segmentation_seconds for r in results), 3),
        "recognitionSecondsPerPage": round(statistics.mean(r.recognition_seconds for r in results), 3),
        "lines": [len(r.lines) for r in results],
        "droppedLines": sum(r.dropped_lines for r in results),
        "cer": truth_cer(pages, results),
        "baselinesModel": {
            "lines": len(baseline_model.lines),
            "seconds": round(baseline_model.seconds, 3),
            "cer": truth_cer(pages[:1], [baseline_model]),
        },
        # Where kraken really put the networks (Fabric moves them on each predict).
        "weightsOn": {
            "segmentation": _placement(engine.segmenter(None).seg_models[0]),
            "recognition": _placement(engine.recognizer(tiny).task.net),
        },
        "gpuPeakMiB": gpu_peak(device),
        "sample": [line.text for line in results[0].lines[:3]],
    }
    return report, results, engine


def train_recognition(
    device: str, data: list[Path], models: Models, args: argparse.Namespace, work: Path, check: Callable[[Path], Any]
) -> dict[str, Any]:
    plan = TrainingPlan(
        kind="recognition",
        data_format="xml",
        training_files=[str(p) for p in data],
        output_dir=str(work / "checkpoints"),
        epochs=args.rec_epochs,
        threads=args.threads,
        base_model=str(models.baselines),
        device=device,
    )
    report, model = _train(plan, work)
    report["check"] = check(model)
    return report


def train_segmentation(
    device: str, data: list[Path], args: argparse.Namespace, work: Path, check_image: Path
) -> dict[str, Any]:
    plan = TrainingPlan(
        kind="segmentation",
        data_format="xml",
        training_files=[str(p) for p in data],
        output_dir=str(work / "checkpoints"),
        epochs=args.seg_epochs,
        threads=args.threads,
        spec=SEGMENTATION_SPEC.format(height=SEGMENTATION_HEIGHT),
        device=device,
    )
    report, model = _train(plan, work)
    started = time.perf_counter()
    # A network trained for an epoch or two from scratch may find no line yet: counted, not judged.
    report["check"] = {
        "linesFound": count_lines(model, [check_image], args.threads, device),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return report


def _train(plan: TrainingPlan, work: Path) -> tuple[dict[str, Any], Path]:
    epochs: list[dict[str, Any]] = []
    stamps: list[float] = []

    def emit(event: dict[str, Any]) -> None:
        if event.get("type") == "epoch":
            stamps.append(time.perf_counter())
            epochs.append(event)

    gpu_peak(plan.device, reset=True)
    started = time.perf_counter()
    fit(plan, emit)
    total = time.perf_counter() - started
    peak = gpu_peak(plan.device)
    if parse_device(plan.device).index is not None and not peak:
        raise CheckFailedError(f"training on {plan.device} allocated no GPU memory: it did not run on the GPU")
    best = best_checkpoint(Path(plan.output_dir))
    if best is None:
        raise CheckFailedError(f"{plan.kind} training on {plan.device} wrote no scored checkpoint")
    model = convert_checkpoint(best.path, work / "model.safetensors")
    if not model.is_file() or model.stat().st_size == 0:
        raise CheckFailedError(f"converting {best.path.name} wrote no model file")
    # The first epoch includes building the network and the data; later ones are the steady cost.
    per_epoch = [b - a for a, b in zip([started, *stamps], stamps, strict=False)]
    return {
        "epochs": len(epochs),
        "secondsPerEpoch": [round(s, 2) for s in per_epoch],
        "steadySecondsPerEpoch": round(statistics.median(per_epoch[1:]), 2) if len(per_epoch) > 1 else None,
        "totalSeconds": round(total, 2),
        "scores": [e.get("score") for e in epochs],
        "losses": [e.get("loss") for e in epochs],
        "bestCheckpoint": best.path.name,
        "modelBytes": model.stat().st_size,
        "gpuPeakMiB": peak,
    }, model


def read_with(engine: PageEngine, page: RenderedPage, device: str) -> Callable[[Path], dict[str, Any]]:
    """The trained recognition model, loaded again from its converted file, reading a letter page."""

    def check(model: Path) -> dict[str, Any]:
        ref = ModelRef.of_file("trained", model)
        result = engine.process(page.image, ref)
        report: dict[str, Any] = {
            "lines": len(result.lines),
            "cer": truth_cer([page], [result]),
            "seconds": round(result.seconds, 3),
            "weightsOn": _placement(engine.recognizer(ref).task.net),
        }
        if not result.lines:
            raise CheckFailedError(f"the trained recognition model read no line on {device}")
        if not on_device(report["weightsOn"], device):
            raise CheckFailedError(f"the trained recognition model ran on {report['weightsOn']}, not {device}")
        return report

    return check


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gpu_processes() -> list[dict[str, Any]] | None:
    """Processes holding GPU memory, as nvidia-smi lists them (None where there is no nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    out = subprocess.run(
        [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    found = []
    for row in out.splitlines():
        pid, _, memory = row.partition(",")
        if pid.strip().isdigit():
            found.append({"pid": int(pid), "usedMiB": memory.strip()})
    return found


def serve_one_page(
    device: str, page: RenderedPage, models: Models, work: Path, in_process: PageResult | None
) -> dict[str, Any]:
    """``python -m ocr_service`` with OCR_DEVICE=``device`` and one worker reads one page over HTTP;
    its lines are compared with ``in_process``, the same page read by this process on the device."""
    import httpx
    import psutil

    store = work / "models"
    store.mkdir(parents=True)
    shutil.copyfile(models.recognition, store / "tiny.safetensors")
    port = _free_port()
    env = dict(
        os.environ,
        OCR_MODELS_DIR=str(store),
        OCR_TRAINING_DIR=str(work / "training"),
        OCR_PORT=str(port),
        OCR_MANAGEMENT_PORT=str(_free_port()),
        OCR_DEFAULT_MODEL="tiny",
        OCR_DEVICE=device,
        OCR_WORKERS="1",
        OCR_LOG_LEVEL="WARNING",
    )
    log_path = work / "service.log"
    started = time.perf_counter()
    with open(log_path, "wb") as service_log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ocr_service"], env=env, cwd=ROOT, stdout=service_log, stderr=subprocess.STDOUT
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=SERVICE_START_S) as client:
            while True:
                if process.poll() is not None:
                    raise CheckFailedError(f"the service exited ({process.returncode}): {_tail(log_path)}")
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                if time.perf_counter() - started > SERVICE_START_S:
                    raise CheckFailedError(
                        f"the service was not healthy after {SERVICE_START_S:.0f} s: {_tail(log_path)}"
                    )
                time.sleep(0.5)
            ready = time.perf_counter() - started
            asked = time.perf_counter()
            response = client.post("/ocr", files={"file": ("page.png", to_png(page.image), "image/png")})
            answered = time.perf_counter() - asked
            if response.status_code != 200:
                raise CheckFailedError(f"POST /ocr answered {response.status_code}: {response.text[:500]}")
            lines = response.json()["pages"][0]["lines"]
            ours = {p.pid for p in psutil.Process(process.pid).children(recursive=True)} | {process.pid}
            on_gpu = gpu_processes()
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    result = PageResult(
        width=page.image.width,
        height=page.image.height,
        lines=[_line(n, line) for n, line in enumerate(lines)],
    )
    report: dict[str, Any] = {
        "startSeconds": round(ready, 1),
        "pageSeconds": round(answered, 2),
        "lines": len(lines),
        "cer": truth_cer([page], [result]),
        "gpuProcesses": on_gpu,
        "serviceProcessesOnGpu": None if on_gpu is None else [p for p in on_gpu if p["pid"] in ours],
    }
    if not lines:
        raise CheckFailedError(f"the service on {device} read no line: {_tail(log_path)}")
    if in_process is not None:
        # The same device and models: the same lines, up to a worker's other thread count.
        report["againstInProcess"] = compare_readings([result], [in_process])
        differences = judge_readings(
            report["againstInProcess"], f"the service on {device}", f"this process on {device}"
        )
        if differences:
            raise CheckFailedError("; ".join(differences))
    if parse_device(device).index is not None and on_gpu is not None and not report["serviceProcessesOnGpu"]:
        # In a container nvidia-smi may not see the pids; then the list of all is the evidence.
        log.warning("nvidia-smi lists no process of the service (pids %s): %s", sorted(ours), on_gpu)
    return report


def _line(index: int, data: dict[str, Any]) -> Any:
    from ocr_service.engine.pipeline import Line

    return Line(index, data["text"], data["confidence"], data["baseline"], data["polygon"], data["bbox"])


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:]


# --- main ----------------------------------------------------------------------------------------


class Run:
    """The report being built, written out after each step; a step that fails is recorded, not fatal."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.budget_s = budget_s
        self.started = time.perf_counter()
        self.report: dict[str, Any] = {"problems": [], "skipped": [], "steps": {}}

    def step(self, name: str, action: Callable[..., T], *arguments: Any) -> T | None:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.budget_s:
            self.report["skipped"].append(f"{name}: time budget ({elapsed:.0f} s of {self.budget_s:.0f} s) spent")
            print(f"== {name}: SKIPPED (time budget spent)", flush=True)
            self.save()
            return None
        print(f"== {name} ...", flush=True)
        began = time.perf_counter()
        try:
            result = action(*arguments)
        except CheckFailedError as exc:
            self.problem(f"{name}: {exc}")
            result = None
        except Exception as exc:
            log.exception("%s crashed", name)
            self.problem(f"{name}: crashed: {type(exc).__name__}: {exc}")
            result = None
        else:
            print(json.dumps(result if not isinstance(result, tuple) else result[0], indent=1), flush=True)
        self.report["steps"][name] = round(time.perf_counter() - began, 1)
        self.save()
        return result

    def problem(self, text: str) -> None:
        print(f"FAIL: {text}", flush=True)
        self.report["problems"].append(text)

    def save(self) -> None:
        self.report["seconds"] = round(time.perf_counter() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.report, indent=1), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the device under test (OCR_DEVICE's spelling)")
    parser.add_argument("--compare", default="cpu", help="the reference device on this machine, or 'none'")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result is written")
    parser.add_argument("--models", type=Path, default=ROOT / ".gpu", help="the models and font (see above)")
    parser.add_argument("--prepare", action="store_true", help="copy the test models and font into --models first")
    parser.add_argument("--pages", type=int, default=3, help="letter pages read on each device")
    parser.add_argument("--lines", type=int, default=10, help="lines per letter page")
    parser.add_argument(
        "--rec-pages", type=int, default=20, help=f"recognition training pages ({TRAINING_LINES_PER_PAGE} lines)"
    )
    parser.add_argument("--rec-epochs", type=int, default=3)
    parser.add_argument("--seg-pages", type=int, default=4, help="segmentation training pages")
    parser.add_argument("--seg-epochs", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no step after this many seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Lightning prints its INFO lines ("GPU available: True (cuda), used: True") through its own
    # handler; the root handler would print them a second time.
    logging.getLogger().handlers[0].setLevel(logging.WARNING)

    device = parse_device(args.device).name
    compare = None if args.compare == "none" else parse_device(args.compare).name
    if args.prepare:
        prepare_models(args.models)
    models = find_models(args.models)
    run = Run(args.out, args.budget_s)
    run.report["arguments"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}

    env = run.step("environment", environment, device)
    run.report["environment"] = env
    if env is not None:
        print(
            f"torch {env['torch']} (CUDA {env['torchCuda']}) is this machine's own; the project pins torch"
            f"{env['torchPin']}: the check runs on the machine's torch, not the pinned one",
            flush=True,
        )
        for mismatch in env["versionMismatches"]:
            print(f"  version differs from the pins: {mismatch}", flush=True)
        if env["notInstalled"]:
            print(f"  declared but not installed: {', '.join(env['notInstalled'])}", flush=True)
        if parse_device(device).index is not None and not env["cudaAvailable"]:
            run.problem(f"torch {env['torch']} sees no GPU: nothing to check on {device}")
            run.save()
            return 1

    pages = letter_pages(args.pages, args.lines, models.font)
    # Roles, not device names, key the results: "device" is the one under test, "reference" the
    # comparison on the same machine (both may be the CPU where there is no GPU).
    roles = {"device": device, **({"reference": compare} if compare else {})}
    engines: dict[str, PageEngine] = {}
    readings: dict[str, list[PageResult]] = {}
    run.report["ocr"] = {}
    for role, where in roles.items():
        done = run.step(f"ocr on {where} ({role})", read_pages, where, pages, models, args.threads)
        if done is not None:
            report, readings[role], engines[role] = done
            run.report["ocr"][role] = {"on": where, **report}
    if "device" in readings:
        tested = run.report["ocr"]["device"]
        for network, placed in tested["weightsOn"].items():
            if not on_device(placed, device):
                run.problem(f"ocr on {device}: kraken ran the {network} network on {placed}")
        if tested["cer"] > READABLE:
            run.problem(f"ocr on {device}: CER {tested['cer']} against the drawn text (readable: {READABLE})")
        if "reference" in readings:
            comparison = compare_readings(readings["device"], readings["reference"])
            reference = run.report["ocr"]["reference"]
            comparison["speedup"] = round(reference["secondsPerPage"] / tested["secondsPerPage"], 2)
            run.report["ocr"]["comparison"] = comparison
            print(f"ocr {device} against {compare}: {json.dumps(comparison)}", flush=True)
            for problem in judge_readings(comparison, device, str(compare)):
                run.problem(f"ocr: {problem}")
            if (comparison["maxBaselineShiftPx"] or 0) > BASELINE_SHIFT_WARN_PX:
                print(f"WARNING: baselines differ by up to {comparison['maxBaselineShiftPx']} px", flush=True)
    first_read = readings["device"][0] if "device" in readings else None
    run.save()

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        if not args.skip_training:
            rec_data = write_training_pages(work / "rec-data", args.rec_pages, seed=5, font=models.font)
            seg_data = write_training_pages(work / "seg-data", args.seg_pages, seed=6, font=models.font)
            check_image = seg_data[0].with_suffix(".png")
            run.report["training"] = {}
            # The device under test first: the reference only gives its timing.
            for role, where in roles.items():
                if role not in engines:
                    continue
                trained = run.report["training"].setdefault(role, {"on": where})
                check = read_with(engines[role], pages[0], where)
                trained["recognition"] = run.step(
                    f"recognition training on {where} ({role})",
                    train_recognition,
                    where,
                    rec_data,
                    models,
                    args,
                    work / f"rec-{role}",
                    check,
                )
                trained["segmentation"] = run.step(
                    f"segmentation training on {where} ({role})",
                    train_segmentation,
                    where,
                    seg_data,
                    args,
                    work / f"seg-{role}",
                    check_image,
                )
                if role == "device" and not args.skip_service:
                    run.report["service"] = run.step(
                        f"service on {device}", serve_one_page, device, pages[0], models, work / "service", first_read
                    )
            speedups = {}
            for kind in ("recognition", "segmentation"):
                a = (run.report["training"].get("device") or {}).get(kind) or {}
                b = (run.report["training"].get("reference") or {}).get(kind) or {}
                if a.get("steadySecondsPerEpoch") and b.get("steadySecondsPerEpoch"):
                    speedups[kind] = round(b["steadySecondsPerEpoch"] / a["steadySecondsPerEpoch"], 2)
            run.report["training"]["speedup"] = speedups
        elif not args.skip_service:
            run.report["service"] = run.step(
                f"service on {device}", serve_one_page, device, pages[0], models, work / "service", first_read
            )

    run.save()
    print(json.dumps({k: run.report[k] for k in ("problems", "skipped", "steps", "seconds")}, indent=1), flush=True)
    print("GPU CHECK:", "FAILED" if run.report["problems"] else "OK", f"(result in {args.out})", flush=True)
    return 1 if run.report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
