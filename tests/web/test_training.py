"""Admin → Training in the real browser: start a tiny writer run and see it finish with its chart,
cancel a run by keyboard, the history's toggle (3 → all), adopting a model by hand; an archivist
is refused on the server; axe, screenshots and touch targets in every language and width.

These tests run against a backend of their own (on the session's real OCR service) whose
thresholds a two-page letter passes, so a run really trains — on a writer, whose model is the
backend's own choice, never the OCR service's default that the other browser tests read with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.support.learning_loop import TOKEN, correct, make_letter, read_document, upload
from tests.support.processes import ADMIN, PASSWORD, Backend, Processes, backend_env, wait_for
from tests.web.support import (
    ARCHIVIST,
    ARCHIVIST_PASSWORD,
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
)

WRITER = "Probe Hand"
# The OCR service trains on 10 lines at least; one of the two pages is held out to judge the model.
LINES_PER_PAGE = 11
# A run trains on one page (the other is held out) for two epochs: a minute or so on the tiny model.
RUN_GUARD_S = 600.0
ENDED = ("DONE", "FAILED", "CANCELLED")


@dataclass
class TrainingSystem:
    live: LiveSystem
    backend: Backend
    writer_slug: str
    document_id: int

    def api(self) -> httpx.Client:
        return self.live.api("admin")


@pytest.fixture(scope="module")
def training(live: LiveSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingSystem]:
    """A backend with thresholds a corrected two-page letter passes, and that letter read and corrected."""
    tmp = tmp_path_factory.mktemp("web-training")
    processes = Processes(tmp)
    env = backend_env(
        tmp,
        f"sqlite:///{tmp / 'backend.db'}",
        live.ocr_url,
        APP_OCR_TRAINING_TOKEN=TOKEN,
        APP_OCR_TRAINING_URL=live.ocr_url,
        APP_TRAINING_POLL_S="0.5",
        APP_TRAINING_EPOCHS="2",
        APP_TRAINING_HELDOUT_SHARE="0.01",
        APP_TRAINING_HELDOUT_MIN_PAGES="1",
        APP_TRAINING_MIN_WRITER_LINES="2",
        # Its own names in the shared OCR service's model store.
        APP_TRAINING_MODEL_PREFIX="uitest",
    )
    try:
        backend = Backend(processes, env).start()
        system = LiveSystem(backend.url, (ADMIN, PASSWORD), (ARCHIVIST, ARCHIVIST_PASSWORD), live.ocr_url)
        with system.api() as client:
            made = client.post(
                "/api/users", json={"username": ARCHIVIST, "password": ARCHIVIST_PASSWORD, "role": "archivist"}
            )
            assert made.status_code == 201, made.text
            letter = make_letter(seed=4711, pages=2, lines_per_page=LINES_PER_PAGE)
            document_id = upload(client, letter, writer=WRITER)
            read_document(client, document_id, (backend.process,))
            correct(client, letter, document_id)
            writers = client.get("/api/admin/training").json()["writers"]
            slug = next(w["writer"]["slug"] for w in writers if w["writer"]["name"] == WRITER)
        yield TrainingSystem(system, backend, slug, document_id)
    finally:
        processes.kill_all()


@pytest.fixture
def admin_pages(browser: Browser, training: TrainingSystem) -> Browsing:
    return Browsing(browser, training.live)


def wait_until_ended(training: TrainingSystem, run_id: int) -> dict[str, Any]:
    with training.api() as client:
        run: dict[str, Any] = wait_for(
            lambda: (r := client.get(f"/api/admin/training/runs/{run_id}").json())["status"] in ENDED and r,
            f"training run {run_id} ends",
            (training.backend.process,),
            guard_s=RUN_GUARD_S,
            poll_s=1.0,
        )
    return run


def start_button(page: Page) -> Locator:
    return page.get_by_role("button", name=f"Lauf starten: {WRITER}")


def newest_run(page: Page) -> Locator:
    return page.locator("#training-history li.run").first


def test_a_tiny_run_started_on_the_page_is_followed_to_its_end_with_its_chart(
    admin_pages: Browsing, training: TrainingSystem
) -> None:
    with admin_pages.page("admin", "de") as page:
        page.goto("/admin/training")
        # Not enough reviewed pages for segmentation: its button is disabled and says why.
        segmentation = page.get_by_role("button", name="Lauf starten: Zeilen finden (Segmentierung)")
        expect(segmentation).to_be_disabled()
        expect(segmentation).to_have_accessible_description(re.compile("vollständig geprüfte Seiten"))
        start_button(page).click()
        expect(page.locator("#notices")).to_contain_text("Der Lauf hat begonnen")
        run = newest_run(page)
        expect(run.locator(".badge").first).to_have_text(re.compile("Wartet auf den Start|Läuft"))
        # The other starts say a run is going while it does.
        expect(start_button(page)).to_be_disabled()
        run_id = int(run.get_attribute("data-run") or 0)
        ended = wait_until_ended(training, run_id)
        assert ended["status"] == "DONE", (ended["errorCode"], ended["errorMessage"])
        # The page follows the run by itself (it polls), no reload.
        card = page.locator(f"#run-{run_id}")
        expect(card.locator(".badge").first).to_have_text("Fertig", timeout=30_000)
        expect(page.locator("#notices")).to_contain_text(f"Lauf {run_id} ist zu Ende: Fertig")
        chart = card.get_by_role("img", name=f"Genauigkeit und Zeichenfehlerrate je Epoche, Lauf {run_id}")
        expect(chart).to_be_visible()
        expect(chart).to_have_accessible_description(re.compile(r"^2 Epochen\. Nach der letzten Epoche"))
        card.get_by_text("Werte je Epoche").click()
        expect(card.get_by_role("table").get_by_role("row")).to_have_count(3)  # header + 2 epochs
        # The held-out pages were read by the new and the old model: the comparison is there too.
        expect(card.get_by_role("img", name="Zeichenfehlerrate auf den zurückgehaltenen Prüfseiten")).to_be_visible()


def test_a_run_is_cancelled_by_keyboard_alone(admin_pages: Browsing, training: TrainingSystem) -> None:
    with admin_pages.page("admin", "de") as page:
        page.goto("/admin/training")
        start_button(page).focus()
        page.keyboard.press("Enter")
        cancel = page.get_by_role("button", name=re.compile(r"^Lauf abbrechen: Lauf \d+$"))
        expect(cancel).to_be_visible()
        run_id = int(newest_run(page).get_attribute("data-run") or 0)
        cancel.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Diesen Lauf abbrechen?")
        expect(dialog).to_be_visible()
        # The confirming button has the focus; Enter confirms.
        expect(dialog.get_by_role("button", name="Lauf abbrechen")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator(f"#run-{run_id} .badge").first).to_have_text("Abgebrochen", timeout=60_000)
        assert wait_until_ended(training, run_id)["status"] == "CANCELLED"
        # The focus stayed on the page, not lost to the document's body.
        assert page.evaluate("document.activeElement !== document.body")


def test_the_history_shows_three_runs_and_all_behind_the_toggle(
    admin_pages: Browsing, training: TrainingSystem
) -> None:
    with training.api() as client:
        while len(client.get("/api/admin/training/runs").json()["runs"]) < 5:
            run = client.post("/api/admin/training/writer", json={"writer": training.writer_slug})
            assert run.status_code == 202, run.text
            cancelled = client.post(f"/api/admin/training/runs/{run.json()['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            wait_until_ended(training, run.json()["id"])
        listed = len(client.get("/api/admin/training/runs", params={"limit": 100}).json()["runs"])
    with admin_pages.page("admin", "de") as page:
        page.goto("/admin/training")
        runs = page.locator("#training-history li.run")
        expect(runs.filter(visible=True)).to_have_count(3)
        toggle = page.locator("#training-history-toggle")
        expect(toggle).to_have_accessible_name(f"Alle {listed} Läufe zeigen")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(toggle).to_have_attribute("aria-controls", "training-history-more")
        toggle.focus()
        page.keyboard.press("Enter")
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(runs.filter(visible=True)).to_have_count(listed)
        expect(toggle).to_have_text("Nur die neuesten 3 Läufe zeigen")
        page.keyboard.press("Space")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(runs.filter(visible=True)).to_have_count(3)


def test_a_model_not_adopted_by_itself_is_adopted_by_hand(admin_pages: Browsing, training: TrainingSystem) -> None:
    with training.api() as client:
        started = client.post("/api/admin/training/writer", json={"writer": training.writer_slug})
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        wait_for(
            lambda: client.get(f"/api/admin/training/runs/{run_id}").json()["ocrJobId"],
            "the run's ZIP is sent",
            (training.backend.process,),
            guard_s=RUN_GUARD_S,
        )
        # Its held-out page goes to the trash while it trains: the new model cannot be judged,
        # so it is not adopted by itself (the run still ends DONE), and an admin may adopt it.
        assert client.delete(f"/api/documents/{training.document_id}").status_code == 204
        run = wait_until_ended(training, run_id)
        assert client.post(f"/api/trash/{training.document_id}/restore").status_code == 200
    assert (run["status"], run["adopted"]) == ("DONE", False), (run["errorCode"], run["adoptionNote"])
    with admin_pages.page("admin", "de") as page:
        page.goto("/admin/training")
        card = page.locator(f"#run-{run_id}")
        expect(card.get_by_text("Nicht übernommen")).to_be_visible()
        card.get_by_role("button", name=f"Dieses Modell nutzen: Lauf {run_id}").click()
        dialog = page.get_by_role("dialog", name="Dieses Modell nutzen?")
        dialog.get_by_role("button", name="Dieses Modell nutzen").click()
        expect(page.locator("#notices")).to_contain_text(f"Das Modell {run['modelName']} ist jetzt in Gebrauch")
        expect(card.locator(".badge", has_text="Modell in Gebrauch")).to_be_visible()
        expect(card.get_by_role("button", name=re.compile("Dieses Modell nutzen"))).to_have_count(0)
    with training.api() as client:
        assert client.get(f"/api/admin/training/runs/{run_id}").json()["adopted"] is True


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_training_page_is_accessible_in_every_language_and_width(
    admin_pages: Browsing, language: str, width: str
) -> None:
    with admin_pages.page("admin", language, width) as page:
        page.goto("/admin/training")
        expect(page.locator("html")).to_have_attribute("lang", language)
        page.locator("#training-history-toggle").click()  # the older runs too
        for summary in page.locator("#training-history summary").all():
            summary.click()  # the tables of values and the technical details open
        audit_page(page, "training", "training", language, width)


def test_the_running_badge_moves_only_for_those_who_allow_motion(admin_pages: Browsing) -> None:
    with admin_pages.page("admin", "en") as page:
        page.goto("/admin/training")
        # A badge made to look like a running one: the rule is the style sheet's, not the run's.
        page.evaluate("document.querySelector('#training-history .badge').classList.add('badge--running')")
        badge = page.locator("#training-history .badge--running").first
        page.emulate_media(reduced_motion="no-preference")
        assert badge.evaluate("e => getComputedStyle(e).animationName") == "training-pulse"
        page.emulate_media(reduced_motion="reduce")
        assert badge.evaluate("e => getComputedStyle(e).animationName") == "none"


def test_an_archivist_gets_403_on_the_server(browsing: Browsing) -> None:
    with browsing.page("archivist", "de") as page:
        response = page.goto("/admin/training")
        assert response is not None and response.status == 403
        expect(page.get_by_role("heading", level=1)).not_to_have_text("Training")
        expect(page.get_by_role("link", name="Training")).to_have_count(0)
    # Not through the API either: what the page's script would call.
    with browsing.live.api("archivist") as client:
        assert client.get("/api/admin/training").status_code == 403
