"""The learning loop's data and scoring, shared by its test and its benchmark.

"Hand B" is a font the base model never saw (``synthetic.HAND_B``); its letters are PDFs of
tall narrow pages of two-word lines (kraken segments every page at 1800 px high, so the
narrower a page is for its height, the cheaper; and well-spaced short lines are found one
for one). Each line the OCR returns is matched to the line drawn there by its baseline's
height, so a reading can be scored against the truth and corrected with it.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.models import tiny_baseline_model
from tests.support.processes import DPI, GUARD_S, OcrService, Process, Processes, wait_for
from tests.support.synthetic import (
    HAND_B,
    RenderedLine,
    RenderedPage,
    edit_distance,
    render_page,
    sentence,
    to_pdf,
    to_png,
)
from tests.support.training_data import page_xml

PAGE_WIDTH = 340  # the widest two words take 276 px at 26 px in hand A, 301 px in hand B
FONT_SIZE = 26
MARGIN = 30
LINE_GAP = 2.4


@dataclass
class Letter:
    """A generated letter (a PDF): its pages and the texts drawn on them."""

    seed: int
    pages: list[RenderedPage]
    pdf: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.pdf = to_pdf([page.image for page in self.pages], dpi=DPI)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.pdf).hexdigest()

    @property
    def lines(self) -> int:
        return sum(len(page.lines) for page in self.pages)


def make_letter(seed: int, pages: int, lines_per_page: int, font_file: Path = HAND_B, *, min_height: int = 0) -> Letter:
    """``pages`` pages of ``lines_per_page`` two-word lines in hand B (or in ``font_file``), at
    least ``min_height`` px high: blla scales a page to 1800 px height, so a page of few lines
    made taller (paper left blank below them) is read several times faster."""
    rng = random.Random(seed)
    height = max(min_height, 2 * MARGIN + int(FONT_SIZE * LINE_GAP) * lines_per_page + FONT_SIZE)
    rendered = []
    for _ in range(pages):
        texts = [sentence(rng, 2) for _ in range(lines_per_page)]
        rendered.append(
            render_page(
                texts,
                width=PAGE_WIDTH,
                height=height,
                font_size=FONT_SIZE,
                margin=MARGIN,
                line_gap=LINE_GAP,
                font_file=font_file,
            )
        )
    return Letter(seed, rendered)


def baseline_y(points: Sequence[Sequence[float]]) -> float:
    return sum(point[1] for point in points) / len(points)


def match_lines(drawn: Sequence[RenderedLine], read: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """For each drawn line, the read line (``baseline`` key) lying on it, or None.

    A read line belongs to the drawn line whose baseline is nearest, within half a line's
    spacing; two read lines on one drawn line (a line cut in two) or a read line on none
    (a stray) make the matching fail loudly, since then the page was not read line for line.
    """
    tolerance = FONT_SIZE * LINE_GAP / 2
    matched: list[dict[str, Any] | None] = [None] * len(drawn)
    for line in read:
        y = baseline_y(line["baseline"])
        distances = [abs(y - baseline_y(d.baseline)) for d in drawn]
        best = min(range(len(drawn)), key=distances.__getitem__)
        if distances[best] > tolerance:
            raise AssertionError(f"a line was found where none was drawn (baseline at y={y:.0f})")
        if matched[best] is not None:
            raise AssertionError(f"drawn line {best} ({drawn[best].text!r}) was found as two lines")
        matched[best] = line
    return matched


def cer(pairs: Sequence[tuple[str, str | None]]) -> float:
    """Character error rate of (truth, read) pairs: all edits over all true characters.

    A line never read (None) counts as all wrong.
    """
    edits = sum(len(truth) if read is None else edit_distance(read, truth) for truth, read in pairs)
    return edits / max(1, sum(len(truth) for truth, _ in pairs))


def scored_pairs(
    letter: Letter, pages: Sequence[Sequence[dict[str, Any]]], text_key: str
) -> list[tuple[str, str | None]]:
    """(truth, read) for every drawn line of ``letter``, given each page's read lines."""
    pairs: list[tuple[str, str | None]] = []
    for page, read in zip(letter.pages, pages, strict=True):
        for drawn, found in zip(page.lines, match_lines(page.lines, read), strict=True):
            pairs.append((drawn.text, None if found is None else str(found[text_key])))
    return pairs


# --- the loop at the OCR service's level (no backend): the benchmark's --level service ------------


def page_lines(reading: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Each page's lines of an ``/ocr`` answer."""
    return [list(page["lines"]) for page in reading["pages"]]


def training_files(letter: Letter, reading: dict[str, Any], prefix: str) -> dict[str, bytes]:
    """ZIP members for ``letter`` as the backend would send them: page images plus PAGE XML with
    the OCR's baselines and polygons and the true texts (the corrections)."""
    files: dict[str, bytes] = {}
    for n, (page, read) in enumerate(zip(letter.pages, page_lines(reading), strict=True)):
        found = match_lines(page.lines, read)
        corrected = [
            RenderedLine(drawn.text, [tuple(p) for p in line["baseline"]], [tuple(p) for p in line["polygon"]])
            for drawn, line in zip(page.lines, found, strict=True)
            if line is not None
        ]
        name = f"{prefix}-p{n + 1:02d}"
        files[f"{name}.png"] = to_png(page.image)
        files[f"{name}.xml"] = page_xml(RenderedPage(page.image, corrected), f"{name}.png").encode("utf-8")
    return files


# --- the loop through the backend's API: the test and the benchmark's --level backend -------------

TOKEN = "learning-loop-token"
WRITER, WRITER_SLUG = "Hand B", "hand-b"
ENDED = ("DONE", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class LoopScale:
    """How big a loop is: the letters corrected (the backend holds ``heldout_pages`` of their
    pages out of training), the new letter read afterwards, and the training epochs."""

    letters: int
    pages_per_letter: int
    lines_per_page: int
    heldout_pages: int
    epochs: int
    new_letter_pages: int = 2
    seed: int = 100

    @classmethod
    def test(cls) -> LoopScale:
        return cls(letters=3, pages_per_letter=2, lines_per_page=20, heldout_pages=2, epochs=10, new_letter_pages=1)

    @classmethod
    def bench(cls) -> LoopScale:
        return cls(letters=8, pages_per_letter=2, lines_per_page=20, heldout_pages=4, epochs=20, new_letter_pages=2)

    @property
    def pages(self) -> int:
        return self.letters * self.pages_per_letter

    def backend_settings(self, ocr_url: str) -> dict[str, str]:
        """The backend's APP_* settings for this loop: training on, held-out pages and epochs as asked."""
        trained_lines = (self.pages - self.heldout_pages) * self.lines_per_page
        return {
            "APP_OCR_TRAINING_TOKEN": TOKEN,
            "APP_OCR_TRAINING_URL": ocr_url,
            # The smallest share: the held-out pages are the minimum number, whatever the page count.
            "APP_TRAINING_HELDOUT_SHARE": "0.01",
            "APP_TRAINING_HELDOUT_MIN_PAGES": str(self.heldout_pages),
            # Below the lines trained on: the guard is not what this loop tests.
            "APP_TRAINING_MIN_WRITER_LINES": str(trained_lines // 2),
            "APP_TRAINING_EPOCHS": str(self.epochs),
            "APP_TRAINING_POLL_S": "0.5",
        }


def loop_service(processes: Processes, folder: Path) -> OcrService:
    """The OCR service with the tiny baselines model (hand A) as its default and training on; one OCR
    worker, since the loop reads and trains in turn."""
    service = OcrService(processes, folder, tiny_baseline_model(), model_name="hand-a")
    return service.start_process(OCR_TRAINING_TOKEN=TOKEN, OCR_WORKERS="1", OCR_TRAINING_THREADS="2")


@dataclass
class LoopResult:
    run: dict[str, Any]  # the writer run at its end, as GET /api/admin/training/runs/{id} gives it
    corrected_lines: int
    training_s: float
    writer_reading: dict[str, Any]  # the new letter read without choosing a model: {"cer", "models"}
    base_reading: dict[str, Any]  # the same letter read again with the base model, chosen

    def report(self) -> dict[str, Any]:
        return {
            "baseCer": self.run["replacedCer"],
            "writerCer": self.run["heldoutCer"],
            "linesUsed": self.run["lineCount"],
            "heldoutLines": self.run["heldoutLineCount"],
            "correctedLines": self.corrected_lines,
            "trainingSeconds": round(self.training_s, 1),
            "epochs": self.run["epoch"],
            "newLetter": {"base": self.base_reading, "writer": self.writer_reading},
        }


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def upload(client: httpx.Client, letter: Letter, writer: str = WRITER) -> int:
    response = client.post(
        "/api/documents",
        files={"file": (f"letter-{letter.seed}.pdf", letter.pdf, "application/pdf")},
        data={"title": f"Letter {letter.seed}", "writer": writer},
    )
    return int(_ok(response, 201)["id"])


def read_document(
    client: httpx.Client,
    document_id: int,
    watched: tuple[Process, ...],
    model: str | None = None,
    guard_s: float = GUARD_S,
) -> None:
    """OCR the document (with ``model``, or without choosing one) and wait until its job is DONE."""
    body = {"model": model} if model else {}
    job_id = _ok(client.post(f"/api/documents/{document_id}/ocr", json=body), 202)["jobId"]
    job = wait_for(
        lambda: (j := _ok(client.get(f"/api/ocr/jobs/{job_id}")))["status"] in ENDED and j,
        f"the OCR job of document {document_id} ends",
        watched,
        guard_s=guard_s,
        poll_s=0.5,
    )
    assert job["status"] == "DONE", job


def lines_by_page(client: httpx.Client, document_id: int, pages: int) -> list[list[dict[str, Any]]]:
    stored = _ok(client.get(f"/api/documents/{document_id}/lines"))
    return [[line for line in stored if line["page"] == n] for n in range(1, pages + 1)]


def found_lines(letter: Letter, pages: Sequence[Sequence[dict[str, Any]]]) -> list[tuple[RenderedLine, dict[str, Any]]]:
    """Each drawn line with the stored line on it; fails unless segmentation found exactly the drawn lines."""
    pairs = []
    for n, (page, read) in enumerate(zip(letter.pages, pages, strict=True), 1):
        found = match_lines(page.lines, read)
        missing = [drawn.text for drawn, line in zip(page.lines, found, strict=True) if line is None]
        assert not missing, f"page {n} of letter {letter.seed}: segmentation missed the lines {missing}"
        pairs += [(drawn, line) for drawn, line in zip(page.lines, found, strict=True) if line is not None]
    return pairs


def correct(client: httpx.Client, letter: Letter, document_id: int) -> int:
    """Save the true text of every line of the document (its ground truth), as a person would."""
    pairs = found_lines(letter, lines_by_page(client, document_id, len(letter.pages)))
    for drawn, line in pairs:
        saved = _ok(client.patch(f"/api/lines/{line['id']}", json={"text": drawn.text, "version": line["version"]}))
        assert saved["text"] == drawn.text
    return len(pairs)


def reading(client: httpx.Client, letter: Letter, document_id: int) -> dict[str, Any]:
    """How the document's current OCR read ``letter``: CER of the OCR text, and the models named on its lines."""
    pages = lines_by_page(client, document_id, len(letter.pages))
    pairs = [(drawn.text, line["ocrText"]) for drawn, line in found_lines(letter, pages)]
    models = sorted({str(line["modelName"]) for page in pages for line in page})
    return {"cer": round(cer(pairs), 4), "models": models}


def _quiet(message: str) -> None:
    pass


def run_loop(
    client: httpx.Client,
    scale: LoopScale,
    base_model: str,
    watched: tuple[Process, ...],
    progress: Callable[[str], None] = _quiet,
    guard_s: float = GUARD_S,
) -> LoopResult:
    """The whole loop through the backend's API, as the admin ``client`` (see the module's doc)."""
    letters = [make_letter(scale.seed + i, scale.pages_per_letter, scale.lines_per_page) for i in range(scale.letters)]
    ids = [upload(client, letter) for letter in letters]
    for document_id in ids:
        read_document(client, document_id, watched, guard_s=guard_s)
        progress(f"document {document_id} read with the base model")
    corrected = sum(correct(client, letter, document_id) for letter, document_id in zip(letters, ids, strict=True))
    progress(f"{corrected} lines corrected; starting the writer run")

    started = time.monotonic()
    run = _ok(client.post("/api/admin/training/writer", json={"writer": WRITER_SLUG}), 202)
    run = wait_for(
        lambda: (r := _ok(client.get(f"/api/admin/training/runs/{run['id']}")))["status"] in ENDED and r,
        "the writer run ends",
        watched,
        guard_s=guard_s,
        poll_s=1.0,
    )
    training_s = time.monotonic() - started
    progress(f"the writer run ended {run['status']} after {training_s:.0f} s; reading a new letter")

    new = make_letter(scale.seed + 1000, scale.new_letter_pages, scale.lines_per_page)
    new_id = upload(client, new)
    read_document(client, new_id, watched, guard_s=guard_s)
    writer_reading = reading(client, new, new_id)
    read_document(client, new_id, watched, model=base_model, guard_s=guard_s)
    base_reading = reading(client, new, new_id)
    return LoopResult(run, corrected, training_s, writer_reading, base_reading)
