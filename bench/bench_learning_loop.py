"""Learning-loop benchmark: how much better a writer's model reads that writer's hand.

The loop of issue 14 at a larger scale than its test (tests/backend/test_learning_loop.py),
with the same code (tests/support/learning_loop.py): letters in "hand B" (a font the base
model never saw) are read with the base model (the tests' tiny baselines model, trained on
DejaVu Sans pages), every line is corrected with the truth, a writer model is fine-tuned
from the base on them, and pages never trained on are read with both models.

    .venv/bin/python bench/bench_learning_loop.py [--level backend|service] [--letters 8] ...

``--level backend`` (the default) runs the OCR service and ``python -m backend`` as processes
and goes through the backend's API only (upload, OCR, PATCH every line, POST a writer run,
wait for it); base and writer CER are the run's own held-out figures (``replacedCer``,
``heldoutCer``), and a new letter is read by both models as well. ``--level service`` drives
the OCR service directly (``/ocr``, ``/train``) with PAGE XML built as the backend builds it.
Prints base CER, writer CER, their ratio, the lines trained on and the training time; exits
with 1 if the writer's CER is above 0.1 × the base's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.learning_loop import (
    TOKEN,
    LoopScale,
    cer,
    loop_service,
    make_letter,
    page_lines,
    read_document,
    reading,
    run_loop,
    scored_pairs,
    training_files,
    upload,
)
from tests.support.processes import Backend, Processes, backend_env, wait_for
from tests.support.synthetic import HAND_A
from tests.support.training_data import make_zip

TARGET_RATIO = 0.1
GUARD_S = 4 * 3600.0  # only against a hung run; a larger scale on a busy machine takes long


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def service_level(processes: Processes, tmp: Path, scale: LoopScale) -> dict[str, Any]:
    """The loop against the OCR service alone: the backend's part done here, by the same rules."""
    ocr = loop_service(processes, tmp / "ocr")
    auth = {"X-Training-Token": TOKEN}
    with httpx.Client(base_url=ocr.url, timeout=900) as client:

        def read(letter_pdf: bytes, model: str | None = None) -> dict[str, Any]:
            form = {"model": model} if model else {}
            response = client.post("/ocr", files={"file": ("letter.pdf", letter_pdf, "application/pdf")}, data=form)
            assert response.status_code == 200, response.text
            return dict(response.json())

        letters = [
            make_letter(scale.seed + i, scale.pages_per_letter, scale.lines_per_page) for i in range(scale.letters)
        ]
        heldout = make_letter(scale.seed + 1000, scale.heldout_pages, scale.lines_per_page)
        files: dict[str, bytes] = {}
        for letter in letters:
            files.update(training_files(letter, read(letter.pdf), f"letter{letter.seed}"))
            say(f"letter {letter.seed} read with the base model")
        base = cer(scored_pairs(heldout, page_lines(read(heldout.pdf)), "text"))
        # The control: the base reads its own hand well, so its CER on hand B is the hand's, not a broken base's.
        hand_a = make_letter(scale.seed + 2000, scale.heldout_pages, scale.lines_per_page, font_file=HAND_A)
        base_hand_a = cer(scored_pairs(hand_a, page_lines(read(hand_a.pdf)), "text"))
        say(f"held-out pages read with the base model: CER {base:.4f} (hand A: {base_hand_a:.4f}); training")
        started = time.monotonic()
        response = client.post(
            "/train",
            files={"file": ("data.zip", make_zip(files), "application/zip")},
            data={"modelName": "writer-hand-b-v1", "baseModel": ocr.model_name, "epochs": str(scale.epochs)},
            headers=auth,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["jobId"]
        job = wait_for(
            lambda: (
                (j := client.get(f"/train/jobs/{job_id}", headers=auth).json())["status"]
                in ("DONE", "FAILED", "CANCELLED")
                and j
            ),
            "the training job ends",
            (ocr.process,),
            guard_s=GUARD_S,
            poll_s=1.0,
        )
        training_s = time.monotonic() - started
        assert job["status"] == "DONE", job
        say(f"trained in {training_s:.0f} s: {job['metrics']}")
        writer = cer(scored_pairs(heldout, page_lines(read(heldout.pdf, "writer-hand-b-v1")), "text"))
    return {
        "level": "service",
        "baseCer": round(base, 4),
        "writerCer": round(writer, 4),
        "baseCerHandA": round(base_hand_a, 4),
        "linesUsed": sum(letter.lines for letter in letters),
        "heldoutLines": heldout.lines,
        "trainingSeconds": round(training_s, 1),
        "epochs": scale.epochs,
        "trainingCer": job["cer"],
    }


def backend_level(processes: Processes, tmp: Path, scale: LoopScale) -> dict[str, Any]:
    ocr = loop_service(processes, tmp / "ocr")
    env = backend_env(tmp, f"sqlite:///{tmp / 'backend.db'}", ocr.url, **scale.backend_settings(ocr.url))
    backend = Backend(processes, env).start()
    with backend.client(timeout=900) as client:
        watched = (backend.process, ocr.process)
        result = run_loop(client, scale, ocr.model_name, watched, progress=say, guard_s=GUARD_S)
        # The control: the base reads its own hand well (a writer without a model: the default reads it).
        hand_a = make_letter(scale.seed + 2000, scale.new_letter_pages, scale.lines_per_page, font_file=HAND_A)
        hand_a_id = upload(client, hand_a, writer="Hand A")
        read_document(client, hand_a_id, watched, guard_s=GUARD_S)
        control = reading(client, hand_a, hand_a_id)
    return {"level": "backend", **result.report(), "baseCerHandA": control["cer"], "handAModels": control["models"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=["backend", "service"], default="backend")
    defaults = LoopScale.bench()
    parser.add_argument("--letters", type=int, default=defaults.letters, help="hand-B letters corrected and trained on")
    parser.add_argument("--pages-per-letter", type=int, default=defaults.pages_per_letter)
    parser.add_argument("--lines-per-page", type=int, default=defaults.lines_per_page)
    parser.add_argument("--heldout-pages", type=int, default=defaults.heldout_pages)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    args = parser.parse_args()
    scale = LoopScale(
        letters=args.letters,
        pages_per_letter=args.pages_per_letter,
        lines_per_page=args.lines_per_page,
        heldout_pages=args.heldout_pages,
        epochs=args.epochs,
    )
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as folder:
        tmp = Path(folder)
        processes = Processes(tmp)
        try:
            report = (service_level if args.level == "service" else backend_level)(processes, tmp, scale)
        finally:
            processes.kill_all()
    ratio = report["writerCer"] / report["baseCer"] if report["baseCer"] else float("inf")
    report["ratio"] = round(ratio, 4)
    print(json.dumps(report, indent=1))
    if report["writerCer"] > TARGET_RATIO * report["baseCer"]:
        print(
            f"FAIL: writer CER {report['writerCer']:.4f} > {TARGET_RATIO} x base CER {report['baseCer']:.4f}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
