"""Admin → Training as the server renders it (no browser): the data bars against the thresholds,
start buttons disabled with the reason in the reader's language, the OCR service's state, the
history (3 shown, the rest behind the toggle), badges, a failed run's error, the charts and
their text alternatives. The browser tests (tests/web/test_training.py) drive the page itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import html
from sqlalchemy import select

from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.training.schemas import EpochOut, KindOut
from backend.users.models import User
from backend.web.training import REASONS, reason_text
from backend.web.training_chart import HEIGHT, LEFT, TOP, WIDTH, epoch_chart
from tests.backend.conftest import PASSWORD
from tests.backend.ocr_standin import StandIn
from tests.backend.training_runs import TrainingApp, enough, pages, prepare, start

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Browser:
    """A person's cookies, as a browser has them after logging in. The requests go through the
    app's own client: the OCR client the page asks lives in that client's event loop."""

    client: TestClient
    cookies: str

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path, headers={"Accept": "text/html", "Cookie": self.cookies}, follow_redirects=False)


def browser(app: TrainingApp, username: str = "admin", language: str = "de") -> Browser:
    client = app.client
    login = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    jar = dict(login.cookies)
    client.cookies.clear()  # the other calls of the test use the bearer tokens
    cookies = "; ".join(f"{name}={value}" for name, value in jar.items())
    chosen = client.put(
        "/api/auth/language",
        json={"language": language},
        headers={"X-CSRF-Token": jar["archiv_csrf"], "Cookie": cookies},
    )
    client.cookies.clear()
    assert chosen.status_code in (200, 204), chosen.text
    return Browser(client, cookies)


def open_page(person: Browser) -> Any:
    response = person.get("/admin/training")
    assert response.status_code == 200, response.text
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    return html.fromstring(response.text)


def add_run(app: TrainingApp, status: RunStatus, n: int, **values: Any) -> int:
    """A run as the follower would have left it (the history shows what is stored)."""
    with app.db.sessions() as session:
        admin = session.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
        run = TrainingRun(
            kind=TrainingKind.RECOGNITION, status=status, sequence=n, model_name=f"archive-v{n}",
            line_count=120, page_count=8, heldout_line_count=30, heldout_page_ids=[1, 2], metrics=[], info=[],
            adopted=False, cancel_requested=False, created_by=admin.id, created_at=START + timedelta(hours=n),
            active=True if status in (RunStatus.QUEUED, RunStatus.RUNNING) else None,
        )  # fmt: skip
        for name, value in values.items():
            setattr(run, name, value)
        session.add(run)
        session.commit()
        return run.id


def metrics(values: Sequence[tuple[float, float]]) -> list[dict[str, Any]]:
    return [{"epoch": n, "accuracy": a, "cer": c} for n, (a, c) in enumerate(values, 1)]


def text(element: Any) -> str:
    return " ".join(element.text_content().split())


def test_the_page_shows_each_kind_against_its_threshold_and_why_a_start_is_refused(app: TrainingApp) -> None:
    enough(app, TrainingKind.RECOGNITION)  # 5 pages of 3 lines, 1 held out: 12 lines ≥ 6
    prepare(app, TrainingKind.WRITER, pages(3, 1))  # 2 lines after the held-out page: 2 short of 4
    page = open_page(browser(app))

    recognition = page.get_element_by_id("kind-recognition")
    bar = recognition.find(".//meter")
    # The bar's value is capped at the threshold (the words say how much there is).
    assert (bar.get("value"), bar.get("max")) == ("6", "6")
    assert "15 von 6 nötigen korrigierten Zeilen" in text(recognition)
    button = recognition.find(".//button[@data-start='recognition']")
    assert button.get("disabled") is None
    segmentation = page.get_element_by_id("kind-segmentation")
    assert (segmentation.find(".//meter").get("value"), segmentation.find(".//meter").get("max")) == ("0", "2")
    refused = segmentation.find(".//button[@data-start='segmentation']")
    assert refused.get("disabled") is not None
    reason = page.get_element_by_id(refused.get("aria-describedby"))
    assert text(reason) == "Noch nicht genug: Es braucht noch 2 vollständig geprüfte Seiten (0 von 2)."

    writer = page.get_element_by_id("kind-writer-anna-mueller")
    assert writer.find(".//button").get("data-writer") == "anna-mueller"
    assert text(page.get_element_by_id("kind-writer-anna-mueller-reason")) == (
        "Noch nicht genug: Es braucht noch 2 korrigierte Zeilen (2 von 4, ohne die zurückgehaltenen Prüfseiten)."
    )
    service = page.get_element_by_id("training-service")
    assert "Erreichbar" in text(service) and "Anfragen gehen normal durch." in text(service)


def test_while_a_run_is_active_every_start_says_so_and_the_run_can_be_cancelled(
    app: TrainingApp, standin: StandIn
) -> None:
    from tests.backend.ocr_standin import epoch_state

    standin.service.training.script(epoch_state(2, 0.6))  # keeps RUNNING
    enough(app, TrainingKind.RECOGNITION)
    run = start(app, "recognition").json()
    app.wait(run["id"], lambda r: r["status"] == "RUNNING" and r["epoch"] == 2, "running at epoch 2")
    page = open_page(browser(app, language="es"))

    for button in page.findall(".//button[@data-start]"):
        assert button.get("disabled") is not None
        assert text(page.get_element_by_id(button.get("aria-describedby"))) == (
            f"El entrenamiento {run['id']} sigue en marcha. Solo uno a la vez: espera a que termine o cancélalo."
        )
    history = page.get_element_by_id("training-history")
    assert history.get("data-active-run") == str(run["id"])
    card = page.get_element_by_id(f"run-{run['id']}")
    badge = card.find_class("badge--running")[0]
    assert text(badge) == "En marcha"
    assert card.find(f".//button[@data-cancel='{run['id']}']") is not None


def test_the_history_shows_three_runs_and_the_rest_behind_the_toggle(app: TrainingApp) -> None:
    ids = [add_run(app, RunStatus.DONE, n, adopted=n % 2 == 0, finished_at=START + timedelta(hours=n, minutes=5))
           for n in range(1, 6)]  # fmt: skip
    page = open_page(browser(app))
    history = page.get_element_by_id("training-history")
    first, more = history.findall(".//ol")
    assert [li.get("data-run") for li in first.findall("li")] == [str(i) for i in reversed(ids[-3:])]
    assert [li.get("data-run") for li in more.findall("li")] == [str(i) for i in reversed(ids[:2])]
    assert more.get("hidden") is not None and more.get("id") == "training-history-more"
    toggle = page.get_element_by_id("training-history-toggle")
    assert (toggle.get("aria-expanded"), toggle.get("aria-controls")) == ("false", "training-history-more")
    assert text(toggle) == "Alle 5 Läufe zeigen"
    # Adopted or not is said in words; only a DONE run not adopted offers to adopt it.
    for run_id in ids:
        card = page.get_element_by_id(f"run-{run_id}")
        adopted = run_id in ids[1::2]
        assert ("Modell in Gebrauch" in text(card)) is adopted
        assert (card.find(f".//button[@data-adopt='{run_id}']") is not None) is (not adopted)


def test_three_runs_or_fewer_have_no_toggle(app: TrainingApp) -> None:
    for n in range(1, 4):
        add_run(app, RunStatus.CANCELLED, n, finished_at=START + timedelta(hours=n))
    page = open_page(browser(app))
    assert page.find(".//*[@id='training-history-toggle']") is None
    assert len(page.get_element_by_id("training-history").findall(".//li")) == 3


def test_a_failed_run_says_why_in_the_readers_language_behind_a_summary(app: TrainingApp) -> None:
    run_id = add_run(
        app, RunStatus.FAILED, 1, error_code="OCR_SERVICE_UNAVAILABLE", error_message="connect refused: 10.0.0.9"
    )
    page = open_page(browser(app))
    card = page.get_element_by_id(f"run-{run_id}")
    assert text(card.find_class("badge")[0]) == "Fehlgeschlagen"
    details = card.find(".//details")
    assert text(details.find("summary")) == "Warum es nicht geklappt hat"
    assert "Der OCR-Dienst ist gerade nicht verfügbar" in text(details)
    technical = details.find_class("technical")[0]
    assert (technical.get("lang"), technical.text) == ("en", "connect refused: 10.0.0.9")


def test_the_chart_of_a_run_has_its_words_and_its_values(app: TrainingApp) -> None:
    values = [(0.41, 0.59), (0.72, 0.28), (0.905, 0.095)]
    run_id = add_run(
        app, RunStatus.DONE, 1, metrics=metrics(values), epoch=3, accuracy=0.905, cer=0.095,
        heldout_cer=0.052, replaced_cer=0.081, replaced_model="hand-a", finished_at=START + timedelta(hours=2),
    )  # fmt: skip
    page = open_page(browser(app, language="en"))
    card = page.get_element_by_id(f"run-{run_id}")
    chart, heldout = card.findall(".//svg")
    assert chart.get("role") == "img"
    title_id, desc_id = chart.get("aria-labelledby"), chart.get("aria-describedby")
    assert (
        text(chart.find(f".//title[@id='{title_id}']")) == f"Accuracy and character error rate per epoch, run {run_id}"
    )
    assert text(chart.find(f".//desc[@id='{desc_id}']")) == (
        "3 epochs. After the last epoch: accuracy 90.5 %, character error rate 9.5 %. Best accuracy: 90.5 %."
    )
    accuracy = chart.find_class("chart__line--accuracy")[0].get("points").split()
    assert len(accuracy) == 3
    ys = [float(point.split(",")[1]) for point in accuracy]
    assert ys == sorted(ys, reverse=True)  # rising accuracy is drawn rising (SVG's y grows downwards)
    rows = [[text(cell) for cell in row] for row in card.findall(".//tbody/tr")]
    assert rows == [["1", "41.0 %", "59.0 %"], ["2", "72.0 %", "28.0 %"], ["3", "90.5 %", "9.5 %"]]
    assert heldout.get("role") == "img"
    assert text(heldout.find(".//desc")) == "New model archive-v1: 5.2 %. Previous model hand-a: 8.1 %."
    new_bar, old_bar = heldout.find_class("chart__bar")
    assert float(new_bar.get("width")) < float(old_bar.get("width"))


ONE_AND_TWO = [
    ("de", "1 Zeile auf 1 Seite", "2 Zeilen auf 2 Seiten"),
    ("en", "1 line on 1 page", "2 lines on 2 pages"),
    ("es", "1 línea en 1 página", "2 líneas en 2 páginas"),
]


@pytest.mark.parametrize(("language", "one", "two"), ONE_AND_TWO)
def test_a_run_on_one_line_of_one_page_says_so_in_the_singular(
    app: TrainingApp, language: str, one: str, two: str
) -> None:
    run_id = add_run(
        app, RunStatus.DONE, 1, line_count=1, page_count=1, heldout_line_count=2, heldout_page_ids=[1, 2],
        metrics=metrics([(0.9, 0.1)]), epoch=1, accuracy=0.9, cer=0.1, finished_at=START + timedelta(hours=2),
    )  # fmt: skip
    card = open_page(browser(app, language=language)).get_element_by_id(f"run-{run_id}")
    facts = [text(fact) for fact in card.findall(".//dd")]
    assert one in facts  # trained on
    assert two in facts  # kept back for judging
    epochs = {"de": "1 Epoche.", "en": "1 epoch.", "es": "1 época."}[language]
    assert text(card.find(".//desc")).startswith(epochs + " ")


@pytest.mark.parametrize(
    ("needed", "amount", "reason"),
    [
        (1, "0 von 1 nötigen Seite", "Noch nicht genug: Es braucht noch 1 vollständig geprüfte Seite (0 von 1)."),
        (2, "0 von 2 nötigen Seiten", "Noch nicht genug: Es braucht noch 2 vollständig geprüfte Seiten (0 von 2)."),
    ],
)
def test_the_pages_a_kind_needs_are_counted_in_the_singular_and_the_plural(
    start_app: Callable[..., TrainingApp], needed: int, amount: str, reason: str
) -> None:
    app = start_app(training_min_segmentation_pages=needed)
    page = open_page(browser(app))
    segmentation = page.get_element_by_id("kind-segmentation")
    assert text(segmentation.find_class("kind__amount")[0]) == amount
    assert text(page.get_element_by_id("kind-segmentation-reason")) == reason


@pytest.mark.parametrize(
    ("language", "unit", "kind", "said"),
    [
        ("de", "lines", TrainingKind.RECOGNITION, "Es braucht noch 1 korrigierte Zeile (0 von 1,"),
        ("de", "pages", TrainingKind.WRITER, "korrigierte Zeilen auf 1 weiteren Seite (0 von 1;"),
        ("en", "lines", TrainingKind.RECOGNITION, "1 more corrected line is needed (0 of 1,"),
        ("en", "pages", TrainingKind.SEGMENTATION, "1 more fully reviewed page is needed (0 of 1)."),
        ("es", "lines", TrainingKind.RECOGNITION, "se necesita 1 línea corregida más (0 de 1,"),
        ("es", "pages", TrainingKind.WRITER, "líneas corregidas en 1 página más (0 de 1;"),
    ],
)
def test_one_missing_line_or_page_is_said_in_the_singular(
    app: TrainingApp, language: str, unit: str, kind: TrainingKind, said: str
) -> None:
    refused = KindOut(
        kind=kind, eligible_lines=0, eligible_pages=0, threshold=1, threshold_unit=unit, can_start=False,
        reason="(English)", reason_code=SHORT, reason_details={"needed": 1, "have": 0, "missing": 1, "unit": unit},
    )  # fmt: skip
    assert said in (reason_text(_Page(app, language), refused) or "")  # type: ignore[arg-type]


def test_an_archivist_is_refused_and_a_visitor_sent_to_log_in(app: TrainingApp) -> None:
    refused = browser(app, "erika").get("/admin/training")
    assert refused.status_code == 403
    assert "<h1" in refused.text and "Training" not in html.fromstring(refused.text).findtext(".//h1")
    visitor = app.client.get("/admin/training", follow_redirects=False)
    assert (visitor.status_code, visitor.headers["location"]) == (303, "/login?next=/admin/training")


# --- the parts on their own -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(-0.5, 1.5, allow_nan=False)),
            st.one_of(st.none(), st.floats(-0.5, 1.5, allow_nan=False)),
        ),
        min_size=1,
        max_size=200,
    ),
    st.randoms(use_true_random=False),
)
def test_every_point_of_a_chart_lies_in_its_plot_in_epoch_order(values: list[Any], rng: Any) -> None:
    epochs = [EpochOut(epoch=n, accuracy=a, cer=c) for n, (a, c) in enumerate(values, 1)]
    rng.shuffle(epochs)  # the service's order is not trusted
    chart = epoch_chart(epochs)
    assert chart is not None
    assert [e.epoch for e in chart.epochs] == list(range(1, len(values) + 1))
    for series, index in ((chart.accuracy, 0), (chart.cer, 1)):
        assert len(series.points) == sum(v[index] is not None for v in values)
        xs = [p.x for p in series.points]
        assert xs == sorted(xs)
        assert all(LEFT <= p.x <= WIDTH and TOP <= p.y <= HEIGHT for p in series.points)
    assert len(chart.x_ticks) <= 11 and chart.x_ticks[-1].label == str(len(values))
    assert epoch_chart([]) is None


class _Page:
    """What reason_text needs of a page: its language and catalogs."""

    def __init__(self, app: TrainingApp, language: str) -> None:
        self.language = language
        self.renderer = app.client.app.state.renderer  # type: ignore[attr-defined]

    def gettext(self, message: str) -> str:
        return str(self.renderer.gettext(self.language, message))

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        return str(self.renderer.ngettext(self.language, singular, plural, count))


SHORT = "NOT_ENOUGH_TRAINING_DATA"
REFUSALS = [
    (TrainingKind.RECOGNITION, SHORT, {"needed": 200, "have": 1234, "missing": 7, "unit": "lines"}),
    (TrainingKind.WRITER, SHORT, {"needed": 3, "have": 1, "missing": 2, "unit": "pages"}),
    (TrainingKind.SEGMENTATION, SHORT, {"needed": 10, "have": 4, "missing": 6, "unit": "pages"}),
    *[
        (TrainingKind.RECOGNITION, code, {"runId": 17} if code == "TRAINING_ALREADY_RUNNING" else None)
        for code in REASONS
    ],
    (TrainingKind.RECOGNITION, "SOMETHING_NEW", None),
]


@pytest.mark.parametrize("language", ["de", "en", "es"])
@pytest.mark.parametrize(("kind", "code", "details"), REFUSALS)
def test_every_reason_is_said_in_every_language_with_its_numbers(
    app: TrainingApp, language: str, kind: TrainingKind, code: str, details: dict[str, Any] | None
) -> None:
    refused = KindOut(
        kind=kind, eligible_lines=0, eligible_pages=0, threshold=1, threshold_unit="lines", can_start=False,
        reason="(English)", reason_code=code, reason_details=details,
    )  # fmt: skip
    said = reason_text(_Page(app, language), refused)  # type: ignore[arg-type]
    assert said and "{" not in said and said != "(English)"
    if language != "en":
        english = reason_text(_Page(app, "en"), refused)  # type: ignore[arg-type]
        assert said != english
    for key, value in (details or {}).items():
        if key in ("missing", "runId") or (key == "have" and value < 1000):
            assert str(value) in said
    assert reason_text(_Page(app, language), refused.model_copy(update={"can_start": True})) is None  # type: ignore[arg-type]
