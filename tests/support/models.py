"""Tiny recognition models the tests train themselves (no model can be downloaded here).

``tiny_recognition_model`` is trained once on rendered line strips (``ketos train -f path``,
so its line type is ``bbox``); ``tiny_baseline_model`` on rendered pages with PAGE XML
(``-f xml``, line type ``baselines``), the kind of model the backend's training runs
fine-tune (their ZIPs hold PAGE XML, and the OCR service refuses to fine-tune a ``bbox``
model on baseline data). Both are cached under ``.cache/test-models`` keyed by everything
that shapes them, so later runs reuse them.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.support.synthetic import HAND_A, RenderedLine, RenderedPage, render_line, sentence, to_png
from tests.support.training_data import page_xml

TINY_SPEC = "[1,32,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 S1(1x0)1,3 Lbx96 Do0.1]"
LINES = 400
EPOCHS = 15
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-models"
_RECIPE_VERSION = "3"
# The baselines model: the bbox model fine-tuned on hand-A letter pages (20 lines each) with
# PAGE XML. kraken itself fine-tunes a bbox model on baseline data (it only warns; the OCR
# service refuses to). From scratch on these pages the tiny network reached only 0.66
# accuracy in 10 epochs; fine-tuned, 0.95 after one.
BASELINE_PAGES = 10
BASELINE_EPOCHS = 4
# Change it whenever the letters' look changes (tests/support/learning_loop.py): the key is made of it.
_BASELINES_RECIPE = "bbox+drawn+blla-1"
# Seeded and deterministic: an unseeded run lands anywhere from 0.89 to 0.97 accuracy, so a
# fresh clone could fail its first test run on a random initialisation.
SEED = 1


def ketos() -> str:
    return str(Path(sys.executable).with_name("ketos"))


def write_line_set(directory: Path, count: int, seed: int) -> list[Path]:
    """Line images with ``.gt.txt`` files, named without inner dots (ketos strips them all)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        text = sentence(rng, rng.randint(2, 5))
        image_path = directory / f"line{i:04d}.png"
        line = render_line(text, font_size=rng.randint(28, 48), pad=rng.randint(2, 16))
        augment(line, rng).save(image_path)
        (directory / f"line{i:04d}.gt.txt").write_text(text, encoding="utf-8")
        paths.append(image_path)
    return paths


def augment(line: Image.Image, rng: random.Random) -> Image.Image:
    """What scans do to lines: JPEG artefacts and softness, so the model reads PDFs of scans too."""
    if rng.random() < 0.3:
        scale = rng.uniform(0.5, 0.85)
        small = line.resize((max(1, int(line.width * scale)), max(1, int(line.height * scale))))
        line = small.resize(line.size)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        line.save(buffer, format="JPEG", quality=rng.randint(30, 90))
        line = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return line


def write_page_set(directory: Path, pages: int, seed: int) -> list[Path]:
    """Hand-A letter pages, each twice with PAGE XML: once with the drawn lines' boxes, once with blla's lines.

    A baselines model cuts each line out along its polygon: trained on the drawn boxes alone it
    read blla's lines of its own hand at CER 0.85 through the OCR service. Both together: the
    boxes are the lines as drawn, blla's polygons what the OCR service cuts out.
    """
    import torch
    from kraken.configs import SegmentationInferenceConfig
    from kraken.tasks import SegmentationTaskModel

    # Imported here: the loop's letters are built on these models' module.
    from tests.support.learning_loop import make_letter, match_lines

    torch.set_num_threads(os.cpu_count() or 1)
    directory.mkdir(parents=True, exist_ok=True)
    segmenter = SegmentationTaskModel.load_model()
    paths: list[Path] = []
    for n in range(pages):
        page = make_letter(seed + n, 1, 20, font_file=HAND_A).pages[0]
        found = segmenter.predict(page.image, SegmentationInferenceConfig(accelerator="cpu")).lines
        read = [{"baseline": line.baseline, "polygon": line.boundary} for line in found]
        lines = [
            RenderedLine(drawn.text, [tuple(p) for p in line["baseline"]], [tuple(p) for p in line["polygon"]])
            for drawn, line in zip(page.lines, match_lines(page.lines, read), strict=True)
            if line is not None
        ]
        (directory / f"page{n:04d}.png").write_bytes(to_png(page.image))
        for name, version in ((f"page{n:04d}", page), (f"page{n:04d}-blla", RenderedPage(page.image, lines))):
            xml = directory / f"{name}.xml"
            xml.write_text(page_xml(version, f"page{n:04d}.png"), encoding="utf-8")
            paths.append(xml)
    return paths


def _key(fmt: str, kind: str = "bbox") -> str:
    # The bbox model's key is the one it always had, so the cache a checkout already holds stays valid.
    if kind == "bbox":
        recipe = f"{_RECIPE_VERSION}|{SEED}|{TINY_SPEC}|{LINES}|{EPOCHS}|{fmt}"
    else:
        recipe = f"{_BASELINES_RECIPE}|{SEED}|{TINY_SPEC}|{BASELINE_PAGES}|{BASELINE_EPOCHS}|{fmt}|{kind}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def tiny_recognition_model(fmt: str = "safetensors") -> Path:
    """The cached tiny bbox model in ``fmt`` (``safetensors`` or ``coreml``), trained if missing."""
    return _cached(fmt, "bbox")


def tiny_baseline_model() -> Path:
    """The cached tiny baselines model (safetensors) of DejaVu Sans pages, trained if missing."""
    return _cached("safetensors", "baselines")


def _cached(fmt: str, kind: str) -> Path:
    suffix = ".mlmodel" if fmt == "coreml" else ".safetensors"
    name = "tiny" if kind == "bbox" else "tiny-baselines"
    target = CACHE / _key(fmt, kind) / f"{name}{suffix}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several test sessions may ask at once: one trains, the others wait and reuse its file.
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        _train(target, fmt, suffix, kind)
    return target


def _train(target: Path, fmt: str, suffix: str, kind: str) -> None:
    work = target.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    if kind == "bbox":
        data, data_format, epochs = write_line_set(work / "lines", LINES, seed=7), "path", EPOCHS
        start = ["-s", TINY_SPEC]
    else:
        data, data_format, epochs = write_page_set(work / "pages", BASELINE_PAGES, seed=5000), "xml", BASELINE_EPOCHS
        start = ["-i", str(tiny_recognition_model(fmt)), "--resize", "union"]
    env = dict(os.environ, KRAKEN_NO_PROGRESS="1")
    cmd = [
        ketos(),
        "--threads",
        str(os.cpu_count() or 1),
        "--seed",
        str(SEED),
        "--deterministic",
        "train",
        "-f",
        data_format,
        *start,
        "-q",
        "fixed",
        "-N",
        str(epochs),
        "-o",
        str(work / "out"),
        "--weights-format",
        fmt,
        *map(str, data),
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    best = sorted((work / "out").glob(f"best_*{suffix}"))
    if not best:
        raise RuntimeError(f"ketos wrote no best model into {work / 'out'}")
    score = float(best[-1].stem.removeprefix("best_"))
    if score < 0.9:
        raise RuntimeError(f"the tiny test model reached only {score:.3f} accuracy")
    tmp = target.with_suffix(".part")
    shutil.copyfile(best[-1], tmp)
    os.replace(tmp, target)
    shutil.rmtree(work, ignore_errors=True)
