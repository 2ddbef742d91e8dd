"""Counts on the pages as the server renders them (no browser): one thing is said in the
singular and more in the plural, in every language, in the page's text and in the forms the
page hands its script (which picks one with Intl.PluralRules)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.users.models import Role
from tests.backend.conftest import PASSWORD, Actors, AppFactory, add_user, bearer
from tests.backend.search_support import document


def page_of(client: TestClient, path: str, username: str, language: str) -> str:
    client.cookies.clear()
    login = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    client.cookies.set("archiv_lang", language)
    response = client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 200, response.text
    return response.text


def script_messages(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="page-messages">([^<]*)</script>', html)
    assert found, "the page hands its script no messages"
    messages: dict[str, Any] = json.loads(found.group(1))
    return messages


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.parametrize(
    ("language", "one", "two"),
    [
        ("de", "Dokumente bleiben 1 Tag im Papierkorb;", "Dokumente bleiben 2 Tage im Papierkorb;"),
        ("en", "Documents stay in the trash for 1 day;", "Documents stay in the trash for 2 days;"),
        ("es", "Los documentos se quedan 1 día en la papelera;", "Los documentos se quedan 2 días en la papelera;"),
    ],
)
def test_the_trash_says_one_day_in_the_singular(app_factory: AppFactory, language: str, one: str, two: str) -> None:
    for days, said in ((1, one), (2, two)):
        client = app_factory(trash_days=days)
        add_user(client, f"admin{days}", Role.ADMIN)
        assert said in text(page_of(client, "/admin/trash", f"admin{days}", language))


@pytest.mark.parametrize(
    ("language", "started", "trash"),
    [
        (
            "de",
            {
                "one": "Texterkennung für {count} Dokument gestartet.",
                "other": "Texterkennung für {count} Dokumente gestartet.",
            },
            {
                "one": "innerhalb von {days} Tag wiederherstellen.",
                "other": "innerhalb von {days} Tagen wiederherstellen.",
            },
        ),
        (
            "en",
            {"one": "OCR started for {count} document.", "other": "OCR started for {count} documents."},
            {"one": "within {days} day.", "other": "within {days} days."},
        ),
        (
            "es",
            {
                "one": "Reconocimiento iniciado para {count} documento.",
                "other": "Reconocimiento iniciado para {count} documentos.",
                "many": "Reconocimiento iniciado para {count} documentos.",
            },
            {"one": "durante {days} día.", "other": "durante {days} días.", "many": "durante {days} días."},
        ),
    ],
)
def test_the_documents_page_hands_its_script_every_plural_form(
    actors: Actors, language: str, started: dict[str, str], trash: dict[str, str]
) -> None:
    messages = script_messages(page_of(actors.client, "/documents", "erika", language))
    assert messages["ocrStarted"] == started
    assert set(messages["trashQuestion"]) == set(trash)
    for category, end in trash.items():
        assert messages["trashQuestion"][category].endswith(end)


@pytest.mark.parametrize(
    ("language", "one", "two"),
    [
        ("de", "1 weitere passende Zeile in diesem Dokument.", "2 weitere passende Zeilen in diesem Dokument."),
        ("en", "1 more matching line in this document.", "2 more matching lines in this document."),
        ("es", "1 línea más que coincide en este documento.", "2 líneas más que coinciden en este documento."),
    ],
)
def test_search_says_one_more_matching_line_in_the_singular(
    app_factory: AppFactory, language: str, one: str, two: str
) -> None:
    client = app_factory(search_hits_per_document=2)
    add_user(client, "admin", Role.ADMIN)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, bearer(client, "admin"), bearer(client, "erika"))
    document(actors, ["Zwiebel eins", "Zwiebel zwei", "Zwiebel drei"], title="Drei")
    document(actors, ["Zwiebel eins", "Zwiebel zwei", "Zwiebel drei", "Zwiebel vier"], title="Vier")
    said = text(page_of(client, "/search?q=Zwiebel", "erika", language))
    assert one in said and two in said
