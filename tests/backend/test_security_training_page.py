"""Admin → Training with hostile stored text (a writer's name, a run's model names, the OCR
service's error and the adoption note): all of it arrives as text, none as markup."""

from __future__ import annotations

from sqlalchemy import select

from backend.documents.models import Document
from backend.training.models import RunStatus, TrainingKind
from tests.backend.test_training_page import add_run, browser, metrics, open_page, text
from tests.backend.training_runs import TrainingApp

WRITER = '"><svg onload=alert(1) data-pwn=writer></svg>'
ERROR = "</p><img src=x onerror=alert(2) data-pwn=error><p>"
NOTE = "<script data-pwn=note>alert(3)</script>"
MODEL = "m<b data-pwn=model>x</b>"


def test_hostile_names_errors_and_notes_stay_text_on_the_training_page(app: TrainingApp) -> None:
    document_id = app.upload(41, writer=WRITER)
    with app.db.sessions() as session:
        writer_id = session.scalar(select(Document.writer_id).where(Document.id == document_id))
    assert writer_id is not None
    add_run(
        app, RunStatus.FAILED, 1, kind=TrainingKind.WRITER, writer_id=writer_id,
        error_code="TRAINING_FAILED", error_message=ERROR, model_name=MODEL,
    )  # fmt: skip
    add_run(
        app, RunStatus.DONE, 2, kind=TrainingKind.WRITER, writer_id=writer_id, model_name=MODEL,
        metrics=metrics([(0.5, 0.4), (0.7, 0.2)]), accuracy=0.7, cer=0.2, heldout_cer=0.1, replaced_cer=0.3,
        replaced_model=MODEL, adoption_note=NOTE,
    )  # fmt: skip
    page = open_page(browser(app))
    assert page.xpath("//*[@data-pwn]") == [], "a stored text became an element"
    assert page.xpath("//body//script[not(@src) and not(@type='application/json')]") == []
    shown = text(page.get_element_by_id("training-history"))
    for stored in (ERROR, NOTE, MODEL):
        assert " ".join(stored.split()) in shown
    assert WRITER in text(page)
