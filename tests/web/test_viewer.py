"""The document view in the real browser: the page image with its lines, correcting by keyboard,
a conflict with someone else's save, zoom and pan, accessibility in every language and width.

The documents are imported (a Transkribus ZIP of a generated 60-line page) through the API, so
every test starts from lines whose text and positions it knows.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.backend.transcript_files import gen_page, transkribus_zip
from tests.support.learning_loop import make_letter, read_document, upload
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
    check_accessibility,
    screenshot,
    touch_targets_too_small,
)

LINES = 60
_seeds = itertools.count(9100)


def import_document(
    client: httpx.Client, title: str, lines: int = LINES, pages: int = 1
) -> tuple[int, list[dict[str, Any]]]:
    """A document of ``pages`` pages of ``lines`` lines (a generated Transkribus export); its id and lines."""
    made_pages = []
    for _ in range(pages):
        seed = next(_seeds)
        made_pages.append(gen_page(seed, f"page-{seed}.png", lines=lines, width=1000, height=40 * lines + 120))
    made = client.post(
        "/api/imports",
        files={"file": (f"{title}.zip", transkribus_zip(made_pages, folder=title), "application/zip")},
        data={"title": title},
    )
    assert made.status_code == 201, made.text
    document_id = made.json()["documents"][0]["id"]
    found = client.get(f"/api/documents/{document_id}/lines")
    assert found.status_code == 200, found.text
    return document_id, found.json()


@pytest.fixture(scope="module")
def admin_api(live: LiveSystem) -> Iterator[httpx.Client]:
    with live.api("admin") as client:
        yield client


@pytest.fixture(scope="module")
def shown(admin_api: httpx.Client) -> tuple[int, list[dict[str, Any]]]:
    """A document the tests only look at (nothing is saved to it)."""
    return import_document(admin_api, "Ansicht Brief 60 Zeilen")


@pytest.fixture(scope="module")
def read_letter(admin_api: httpx.Client) -> tuple[int, list[dict[str, Any]]]:
    """A generated handwritten letter the real OCR service read (its confidences are the tiny model's)."""
    document_id = upload(admin_api, make_letter(8811, pages=1, lines_per_page=6))
    read_document(admin_api, document_id, ())
    lines = admin_api.get(f"/api/documents/{document_id}/lines").json()
    return document_id, lines


def open_view(page: Page, document_id: int, query: str = "") -> None:
    page.goto(f"/documents/{document_id}{query}")
    expect(page.locator("html")).to_have_attribute("data-viewer-ready", "true")


def field(page: Page, number: int) -> Any:
    return page.get_by_role("textbox", name=f"Zeile {number}", exact=True)


def test_every_line_is_drawn_on_the_image_and_listed_under_its_crop(
    browsing: Browsing, shown: tuple[int, list[dict[str, Any]]]
) -> None:
    document_id, lines = shown
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        expect(page.locator("svg.overlay polygon")).to_have_count(len(lines))
        expect(page.locator("ol.lines > li")).to_have_count(len(lines))
        for number in (1, 30, len(lines)):
            expect(field(page, number)).to_have_value(lines[number - 1]["currentText"])
        # Each crop shows the page image at its line's box: the background is placed at minus the box's corner.
        crop = page.evaluate(
            """id => { const c = document.querySelector(`#line-${id} .line__crop`); const s = c.style;
                       return [s.backgroundImage, s.backgroundPosition, c.offsetWidth, c.offsetHeight]; }""",
            lines[4]["id"],
        )
        assert "/pages/1/image" in crop[0]
        xs = [x for x, _ in lines[4]["polygon"]]
        ys = [y for _, y in lines[4]["polygon"]]
        left, top = float(crop[1].split()[0].rstrip("px")), float(crop[1].split()[1].rstrip("px"))
        scale = crop[2] / (max(xs) - min(xs))
        assert left == pytest.approx(-min(xs) * scale, abs=1.5)
        assert top == pytest.approx(-min(ys) * scale, abs=1.5)
        assert crop[3] == pytest.approx((max(ys) - min(ys)) * scale, abs=1.5)


def test_a_line_is_corrected_by_keyboard_alone_and_kept_after_a_reload(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, lines = import_document(admin_api, "Brief Tastatur", lines=6)
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        first = field(page, 1)
        first.focus()
        expect(page.locator(f"#line-{lines[0]['id']}")).to_have_class(re.compile(r"\bis-selected\b"))
        expect(page.locator(f'polygon[data-line-id="{lines[0]["id"]}"]')).to_have_class(re.compile(r"is-selected"))
        page.keyboard.press("End")
        page.keyboard.type(" – eins")
        page.keyboard.press("Enter")  # saves and goes on
        expect(field(page, 2)).to_be_focused()
        page.keyboard.press("End")
        page.keyboard.type(" – zwei")
        page.keyboard.press("Tab")
        expect(field(page, 3)).to_be_focused()
        page.keyboard.type("verworfen")
        page.keyboard.press("Escape")  # back to the text it had
        expect(field(page, 3)).to_have_value(lines[2]["currentText"])
        expect(page.locator(f"#line-{lines[2]['id']} .line__status")).to_have_text("")  # nothing was saved
        page.keyboard.press("Shift+Tab")
        expect(field(page, 2)).to_be_focused()
        line_one = page.locator(f"#line-{lines[0]['id']}")
        expect(line_one).to_have_class(re.compile(r"\bline--saved\b"))
        expect(line_one.locator(".line__status")).to_have_text("Gespeichert")
        expect(line_one.locator(".mark--corrected")).to_be_visible()
        expect(page.locator(f"#line-{lines[1]['id']}")).to_have_class(re.compile(r"\bline--saved\b"))
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-viewer-ready", "true")
        expect(field(page, 1)).to_have_value(lines[0]["currentText"] + " – eins")
        expect(field(page, 2)).to_have_value(lines[1]["currentText"] + " – zwei")
        expect(field(page, 3)).to_have_value(lines[2]["currentText"])
        # The one focused last is the one the address names: a reload opens the same line.
        assert f"line={lines[1]['id']}" in page.url
    stored = {line["id"]: line for line in admin_api.get(f"/api/documents/{document_id}/lines").json()}
    assert stored[lines[0]["id"]]["text"] == lines[0]["currentText"] + " – eins"
    assert stored[lines[2]["id"]]["version"] == lines[2]["version"]  # Esc: nothing saved


def test_a_pause_in_typing_saves_and_esc_still_brings_back_the_text_the_line_had(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, lines = import_document(admin_api, "Brief Pause", lines=2)
    original = lines[0]["currentText"]
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        field(page, 1).focus()
        page.keyboard.press("End")
        page.keyboard.type(" und mehr")
        item = page.locator(f"#line-{lines[0]['id']}")
        expect(item).to_have_class(re.compile(r"\bline--unsaved\b"))
        expect(item).to_have_class(re.compile(r"\bline--saved\b"))  # saved by the pause alone
        page.keyboard.press("Escape")
        expect(field(page, 1)).to_have_value(original)
        expect(item).to_have_class(re.compile(r"\bline--saved\b"))
    history = admin_api.get(f"/api/lines/{lines[0]['id']}/history").json()
    assert [entry["textAfter"] for entry in history] == [original + " und mehr", original]


@pytest.mark.parametrize("choice", ["mine", "theirs"])
def test_a_conflict_shows_both_texts_and_either_choice_is_saved(
    browsing: Browsing, admin_api: httpx.Client, choice: str
) -> None:
    document_id, lines = import_document(admin_api, f"Brief Konflikt {choice}", lines=4)
    line = lines[1]
    with browsing.page("archivist") as mine, browsing.page("admin") as theirs:
        open_view(mine, document_id)
        open_view(theirs, document_id)
        field(theirs, 2).fill("Ihre Lesung der Zeile")
        field(theirs, 2).press("Enter")
        expect(theirs.locator(f"#line-{line['id']}")).to_have_class(re.compile(r"\bline--saved\b"))
        field(mine, 2).fill("Meine Lesung der Zeile")
        field(mine, 2).press("Enter")
        conflict = mine.locator(f"#line-{line['id']} .conflict")
        expect(conflict).to_be_visible()
        expect(conflict.locator(".conflict__theirs")).to_have_text("Ihre Lesung der Zeile")
        expect(conflict.locator(".conflict__mine")).to_have_text("Meine Lesung der Zeile")
        expect(field(mine, 2)).to_have_value("Meine Lesung der Zeile")  # nothing typed is lost
        expect(mine.locator("#notices .notice--warning")).to_contain_text("Zeile 2")
        check_accessibility(mine, "document view with a conflict")
        screenshot(mine, "document-conflict-desktop")
        label = "Meinen Text behalten" if choice == "mine" else "Den Text der anderen Person übernehmen"
        mine.get_by_role("button", name=label).click()
        expect(conflict).to_have_count(0)
        expect(mine.locator(f"#line-{line['id']}")).to_have_class(re.compile(r"\bline--saved\b"))
        wanted = "Meine Lesung der Zeile" if choice == "mine" else "Ihre Lesung der Zeile"
        expect(field(mine, 2)).to_have_value(wanted)
        mine.reload()
        expect(field(mine, 2)).to_have_value(wanted)
        expect(mine.locator(".conflict")).to_have_count(0)  # no draft left to bring it back
    stored = next(x for x in admin_api.get(f"/api/documents/{document_id}/lines").json() if x["id"] == line["id"])
    assert stored["text"] == wanted
    history = admin_api.get(f"/api/lines/{line['id']}/history").json()
    # Their save, then mine on top of it where I kept mine: each once, nothing lost or doubled.
    expected = ["Ihre Lesung der Zeile"] + (["Meine Lesung der Zeile"] if choice == "mine" else [])
    assert [entry["textAfter"] for entry in history] == expected


def test_text_typed_while_the_archive_is_out_of_reach_is_saved_on_the_next_visit(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, lines = import_document(admin_api, "Brief ohne Netz", lines=3)
    with browsing.context("archivist") as context:
        page = context.new_page()
        open_view(page, document_id)
        context.set_offline(True)
        field(page, 1).fill("Offline getippt")
        field(page, 1).press("Enter")
        expect(page.locator(f"#line-{lines[0]['id']}")).to_have_class(re.compile(r"\bline--retrying\b"))
        page.close()
        context.set_offline(False)
        again = context.new_page()
        open_view(again, document_id)
        expect(field(again, 1)).to_have_value("Offline getippt")
        expect(again.locator(f"#line-{lines[0]['id']}")).to_have_class(re.compile(r"\bline--saved\b"))
    stored = admin_api.get(f"/api/documents/{document_id}/lines").json()
    assert stored[0]["text"] == "Offline getippt"


def log_in_by_form(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Benutzername").fill(username)
    page.get_by_label("Passwort").fill(password)
    page.get_by_role("button", name="Anmelden").click()
    expect(page).to_have_url(re.compile(r"/documents$"))


def log_out_by_button(page: Page) -> None:
    page.goto("/documents")
    page.locator("#logout").click()
    expect(page).to_have_url(re.compile(r"/login"))


def test_a_draft_on_a_shared_tablet_is_offered_to_its_writer_after_logout_and_to_nobody_else(
    browsing: Browsing, live: LiveSystem, admin_api: httpx.Client
) -> None:
    document_id, lines = import_document(admin_api, "Brief auf dem Tablet", lines=3)
    line = f"#line-{lines[0]['id']}"
    with browsing.context("archivist", width="tablet") as context:
        page = context.new_page()
        open_view(page, document_id)
        context.set_offline(True)
        field(page, 1).fill("Ernas Entwurf")
        field(page, 1).press("Enter")
        expect(page.locator(line)).to_have_class(re.compile(r"\bline--retrying\b"))
        page.close()
        context.set_offline(False)
        tablet = context.new_page()
        log_out_by_button(tablet)

        # Someone else on the same tablet: the first person's draft is neither shown nor saved.
        log_in_by_form(tablet, *live.admin)
        open_view(tablet, document_id)
        expect(field(tablet, 1)).to_have_value(lines[0]["text"])
        expect(tablet.locator(line)).not_to_have_class(re.compile(r"\bline--(saved|retrying|conflict)\b"))
        expect(tablet.locator(".conflict")).to_have_count(0)
        assert admin_api.get(f"/api/documents/{document_id}/lines").json()[0]["text"] == lines[0]["text"]
        log_out_by_button(tablet)

        # The first person again: the logout kept the draft, and it is saved now.
        log_in_by_form(tablet, *live.archivist)
        open_view(tablet, document_id)
        expect(field(tablet, 1)).to_have_value("Ernas Entwurf")
        expect(tablet.locator(line)).to_have_class(re.compile(r"\bline--saved\b"))
    stored = admin_api.get(f"/api/documents/{document_id}/lines").json()
    assert stored[0]["text"] == "Ernas Entwurf"
    history = admin_api.get(f"/api/lines/{lines[0]['id']}/history").json()
    writer = next(u["id"] for u in admin_api.get("/api/users").json() if u["username"] == live.archivist[0])
    assert [(entry["userId"], entry["textAfter"]) for entry in history] == [(writer, "Ernas Entwurf")]


def canvas_scale(page: Page) -> float:
    transform = page.locator(".stage__canvas").evaluate("c => c.style.transform")
    match = re.search(r"scale\(([\d.e-]+)\)", transform)
    assert match, transform
    return float(match.group(1))


def test_zoom_by_buttons_keys_and_wheel_and_a_tap_on_a_line_opens_it(
    browsing: Browsing, shown: tuple[int, list[dict[str, Any]]]
) -> None:
    document_id, lines = shown
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        fitted = canvas_scale(page)
        page.get_by_role("button", name="Vergrößern").click()
        assert canvas_scale(page) == pytest.approx(fitted * 1.25)
        page.get_by_role("button", name="Verkleinern").click()
        assert canvas_scale(page) == pytest.approx(fitted)
        stage = page.get_by_role("group", name="Seitenbild")
        stage.focus()
        page.keyboard.press("+")
        page.keyboard.press("+")
        assert canvas_scale(page) == pytest.approx(fitted * 1.25**2)
        before = page.locator(".stage__canvas").evaluate("c => c.style.transform")
        page.keyboard.press("ArrowDown")
        assert page.locator(".stage__canvas").evaluate("c => c.style.transform") != before
        page.keyboard.press("0")
        assert canvas_scale(page) == pytest.approx(fitted)
        box = stage.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -300)
        page.wait_for_function(
            "s => parseFloat(document.querySelector('.stage__canvas').style.transform.split('scale(')[1]) > s",
            arg=fitted * 1.2,
        )
        # Dragged with the mouse, the image moves; a drag that starts on a line opens nothing.
        before = page.locator(".stage__canvas").evaluate("c => c.style.transform")
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        assert page.evaluate("([x, y]) => document.elementFromPoint(x, y).tagName", [x, y]) == "polygon"
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 40, y + 40, steps=5)
        page.mouse.up()
        assert page.locator(".stage__canvas").evaluate("c => c.style.transform") != before
        assert page.evaluate("document.activeElement.tagName") != "TEXTAREA"
        page.get_by_role("button", name="An Breite anpassen").click()
        # A tap on a line's polygon opens that line for editing.
        target = lines[3]
        page.locator(f'polygon[data-line-id="{target["id"]}"]').click()
        expect(field(page, 4)).to_be_focused()
        expect(page.locator(f"#line-{target['id']}")).to_have_class(re.compile(r"\bis-selected\b"))


def test_a_link_to_a_line_opens_it_selected(browsing: Browsing, shown: tuple[int, list[dict[str, Any]]]) -> None:
    document_id, lines = shown
    wanted = lines[45]
    with browsing.page("archivist") as page:
        open_view(page, document_id, f"?page=1&line={wanted['id']}")
        expect(field(page, 46)).to_be_focused()
        expect(page.locator(f"#line-{wanted['id']}")).to_be_in_viewport()
        expect(page.locator(f'polygon[data-line-id="{wanted["id"]}"]')).to_have_class(re.compile(r"is-selected"))


def test_a_page_without_lines_says_so(browsing: Browsing, admin_api: httpx.Client) -> None:
    document_id, _ = import_document(admin_api, "Brief ohne Zeilen", lines=0)
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        expect(page.get_by_text("Diese Seite hat noch keine Zeilen.")).to_be_visible()


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_document_view_is_accessible_in_every_language_and_width(
    browsing: Browsing, shown: tuple[int, list[dict[str, Any]]], language: str, width: str
) -> None:
    document_id, lines = shown
    with browsing.page("archivist", language, width) as page:
        open_view(page, document_id, f"?line={lines[2]['id']}")
        audit_page(page, "document view", "document", language, width)


@pytest.mark.slow
def test_uncertain_lines_are_marked_and_next_uncertain_goes_from_one_to_the_next(
    browsing: Browsing, read_letter: tuple[int, list[dict[str, Any]]]
) -> None:
    document_id, lines = read_letter
    uncertain = [line for line in lines if line["ocrConfidence"] is not None and line["ocrConfidence"] < 0.8]
    certain = [line for line in lines if line not in uncertain]
    # The tiny model is unsure of some lines and sure of others; were it not, this test would prove nothing.
    assert uncertain and certain, [line["ocrConfidence"] for line in lines]
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        marked = page.locator("li.line--uncertain").evaluate_all("items => items.map(i => Number(i.dataset.lineId))")
        assert marked == [line["id"] for line in uncertain]
        expect(page.locator(f"#line-{uncertain[0]['id']} .mark--uncertain")).to_have_text(re.compile("Unsicher"))
        expect(page.locator(f"#line-{certain[0]['id']} .mark--uncertain")).to_be_hidden()
        expect(page.locator("polygon.is-uncertain")).to_have_count(len(uncertain))
        page.get_by_role("button", name="Nächste unsichere Zeile").click()
        first = page.locator(f"#line-{uncertain[0]['id']} textarea")
        expect(first).to_be_focused()
        page.keyboard.press("Alt+ArrowDown")
        expect(page.locator(f"#line-{uncertain[1 % len(uncertain)]['id']} textarea")).to_be_focused()
        # Corrected, a line is no longer uncertain: "next" skips it, the summary counts it.
        first.fill("Gruss dem")
        first.press("Enter")
        expect(page.locator(f"#line-{uncertain[0]['id']}")).to_have_class(re.compile(r"\bline--saved\b"))
        expect(page.locator("li.line--uncertain")).to_have_count(len(uncertain) - 1)
        expect(page.locator("#lines-summary")).to_have_text(
            f"1 von {len(lines)} Zeilen korrigiert, {len(uncertain) - 1} unsicher"
        )
        if len(uncertain) == 1:
            page.keyboard.press("Alt+ArrowDown")
            expect(page.locator("#save-announcer")).to_have_text(
                "Auf dieser Seite gibt es keine unsicheren Zeilen mehr."
            )
        screenshot(page, "document-letter-desktop")


def test_pages_are_reached_by_thumbnails_and_previous_next(browsing: Browsing, admin_api: httpx.Client) -> None:
    document_id, lines = import_document(admin_api, "Brief zwei Seiten", lines=3, pages=2)
    second = [line for line in lines if line["page"] == 2]
    with browsing.page("archivist", width="tablet") as page:
        open_view(page, document_id)
        pages = page.get_by_role("navigation", name="Seiten des Dokuments")
        expect(pages.get_by_role("link", name="Seite 1")).to_have_attribute("aria-current", "page")
        expect(pages.locator("img")).to_have_count(2)
        pages.get_by_role("link", name="Nächste Seite").click()
        expect(page).to_have_url(re.compile(r"\?page=2$"))
        expect(page.locator("html")).to_have_attribute("data-viewer-ready", "true")
        expect(field(page, 1)).to_have_value(second[0]["currentText"])
        expect(pages.get_by_role("link", name="Seite 2")).to_have_attribute("aria-current", "page")
        expect(pages.get_by_role("link", name="Nächste Seite")).to_have_count(0)
        pages.get_by_role("link", name="Seite 1").click()
        expect(page).to_have_url(re.compile(r"\?page=1$"))
        check_accessibility(page, "document view with pages")
        assert touch_targets_too_small(page) == []


def test_the_lines_are_read_again_when_the_ocr_panel_says_a_run_finished(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, lines = import_document(admin_api, "Brief neu gelesen", lines=3)
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        page.evaluate("window.notReloaded = true")
        field(page, 3).fill("noch nicht gespeichert")
        # Meanwhile the archive's text of line 1 changed (as an OCR run would change it).
        changed = admin_api.patch(f"/api/lines/{lines[0]['id']}", json={"text": "neu gelesen", "version": 1})
        assert changed.status_code == 200, changed.text
        page.evaluate(
            "id => document.dispatchEvent(new CustomEvent('ocr:finished', {detail: {documentId: id}}))", document_id
        )
        expect(field(page, 1)).to_have_value("neu gelesen")
        expect(field(page, 3)).to_have_value("noch nicht gespeichert")  # typed text survives the swap
        expect(field(page, 3)).to_be_focused()  # and the person stays in their line
        assert page.evaluate("window.notReloaded") is True
        expect(page.locator("svg.overlay polygon")).to_have_count(3)
    stored = admin_api.get(f"/api/documents/{document_id}/lines").json()
    assert stored[2]["text"] == "noch nicht gespeichert"


def test_two_fingers_pinch_the_image_larger_and_one_finger_moves_it(
    browsing: Browsing, shown: tuple[int, list[dict[str, Any]]]
) -> None:
    document_id, _ = shown
    with browsing.page("archivist", width="tablet") as page:
        open_view(page, document_id)
        fitted = canvas_scale(page)
        page.evaluate(
            """() => {
                const stage = document.getElementById('stage');
                const box = stage.getBoundingClientRect();
                const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
                const send = (type, id, x) => stage.dispatchEvent(new PointerEvent(type, {
                    pointerId: id, pointerType: 'touch', isPrimary: id === 1, clientX: x, clientY: cy,
                    bubbles: true, cancelable: true }));
                send('pointerdown', 1, cx - 40); send('pointerdown', 2, cx + 40);
                for (let step = 1; step <= 10; step++) { send('pointermove', 1, cx - 40 - 8 * step);
                                                         send('pointermove', 2, cx + 40 + 8 * step); }
                send('pointerup', 1, cx - 120); send('pointerup', 2, cx + 120);
            }"""
        )
        # The fingers went from 80 px apart to 240: the image is three times as large.
        assert canvas_scale(page) == pytest.approx(fitted * 3, rel=0.02)
