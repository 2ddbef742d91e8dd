"""A tiny recognition model the tests train themselves (no model can be downloaded here).

It is trained once on rendered line strips (``ketos train -f path``, so its line type is
``bbox``) and cached under ``.cache/test-models`` keyed by everything that shapes it, so
later runs reuse it.
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

from tests.support.synthetic import render_line, sentence

TINY_SPEC = "[1,32,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 S1(1x0)1,3 Lbx96 Do0.1]"
LINES = 400
EPOCHS = 15
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-models"
_RECIPE_VERSION = "3"
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


def _key(fmt: str) -> str:
    return hashlib.sha256(f"{_RECIPE_VERSION}|{SEED}|{TINY_SPEC}|{LINES}|{EPOCHS}|{fmt}".encode()).hexdigest()[:16]


def tiny_recognition_model(fmt: str = "safetensors") -> Path:
    """The cached tiny bbox model in ``fmt`` (``safetensors`` or ``coreml``), trained if missing."""
    suffix = ".mlmodel" if fmt == "coreml" else ".safetensors"
    target = CACHE / _key(fmt) / f"tiny{suffix}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several test sessions may ask at once: one trains, the others wait and reuse its file.
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        _train(target, fmt, suffix)
    return target


def _train(target: Path, fmt: str, suffix: str) -> None:
    work = target.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    lines = write_line_set(work / "lines", LINES, seed=7)
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
        "path",
        "-s",
        TINY_SPEC,
        "-q",
        "fixed",
        "-N",
        str(EPOCHS),
        "-o",
        str(work / "out"),
        "--weights-format",
        fmt,
        *map(str, lines),
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
