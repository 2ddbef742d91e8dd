"""GET /api/writers and /api/writers/{slug}: each writer, their documents, their own model."""

from __future__ import annotations

import itertools
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from backend.documents.models import Writer
from backend.documents.service import slugify
from backend.training.models import TrainingKind
from backend.writers.schemas import SLUG_PATTERN
from tests.backend.conftest import Actors, services_of
from tests.backend.ocr_jobs import upload
from tests.backend.training_support import add_run, writer_id_of

SEEDS = itertools.count(4000)
PAGING = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _adopt_run(actors: Actors, slug: str, sequence: int) -> tuple[str, int]:
    """A finished writer run whose model was adopted as the writer's, as adoption leaves them."""
    name = f"writer-{slug}-v{sequence}"
    writer_id = writer_id_of(actors.client, slug)
    run_id = add_run(actors.client, TrainingKind.WRITER, name, (), writer_id=writer_id, sequence=sequence)
    with services_of(actors.client).db.sessions() as session:
        writer = session.get_one(Writer, writer_id)
        writer.model_name, writer.model_run_id = name, run_id
        session.commit()
    return name, run_id


def test_each_writer_with_their_documents_and_model(actors: Actors) -> None:
    for writer in ("Anna Müller", "Anna Müller", "Bernd Schulz", "Bernd Schulz"):
        upload(actors, next(SEEDS), pages=1, writer=writer)
    upload(actors, next(SEEDS), pages=1)  # no writer: counted for nobody
    trashed = upload(actors, next(SEEDS), pages=1, writer="Bernd Schulz")
    assert actors.client.delete(f"/api/documents/{trashed}", headers=actors.archivist).status_code == 204
    name, run_id = _adopt_run(actors, "anna-mueller", 3)
    with services_of(actors.client).db.sessions() as session:
        # A model set by hand, no run known for it: its name is its label.
        bernd = session.scalars(select(Writer).where(Writer.slug == "bernd-schulz")).one()
        bernd.model_name = "kurrent-bernd"
        session.commit()
        ids = {w.slug: w.id for w in session.scalars(select(Writer))}

    response = actors.client.get("/api/writers", headers=actors.archivist)
    assert response.status_code == 200, response.text
    anna = {
        "id": ids["anna-mueller"],
        "slug": "anna-mueller",
        "name": "Anna Müller",
        "documentCount": 2,
        "model": {"name": name, "runId": run_id, "runSequence": 3, "label": "Anna Müller's model (v3)"},
    }
    bernd_out = {
        "id": ids["bernd-schulz"],
        "slug": "bernd-schulz",
        "name": "Bernd Schulz",
        # The document in the trash is not counted.
        "documentCount": 2,
        "model": {"name": "kurrent-bernd", "runId": None, "runSequence": None, "label": "kurrent-bernd"},
    }
    assert response.json() == {"items": [anna, bernd_out], "nextCursor": None}
    one = actors.client.get("/api/writers/anna-mueller", headers=actors.admin)
    assert one.status_code == 200 and one.json() == anna


def test_a_writer_without_documents_or_model(actors: Actors) -> None:
    with services_of(actors.client).db.sessions() as session:
        session.add(Writer(name="Clara Weiß", slug="clara-weiss", created_at=services_of(actors.client).clock()))
        session.commit()
    body = actors.client.get("/api/writers/clara-weiss", headers=actors.archivist).json()
    assert (body["documentCount"], body["model"]) == (0, None)


@pytest.mark.parametrize("slug", ["nobody", "anna-mueller-2", "0"])
def test_an_unknown_writer_is_a_404(actors: Actors, slug: str) -> None:
    response = actors.client.get(f"/api/writers/{slug}", headers=actors.archivist)
    assert response.status_code == 404
    assert response.json()["code"] == "WRITER_NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/writers/Anna%20M%C3%BCller", {}),
        ("/api/writers/-anna", {}),
        ("/api/writers/" + "a" * 201, {}),
        ("/api/writers", {"cursor": "Anna"}),
        ("/api/writers", {"cursor": "a'; --"}),
        ("/api/writers", {"limit": "0"}),
        ("/api/writers", {"limit": "201"}),
        ("/api/writers", {"limit": "x"}),
        ("/api/writers", {"sort": "name"}),
    ],
)
def test_malformed_slugs_cursors_and_limits_are_a_422(actors: Actors, path: str, params: dict[str, str]) -> None:
    response = actors.client.get(path, headers=actors.archivist, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "INVALID_REQUEST"


@PAGING
@given(
    names=st.lists(st.text(min_size=1, max_size=30).map(str.strip).filter(bool), max_size=12),
    limit=st.integers(1, 5),
)
def test_keyset_pages_list_every_writer_once_in_one_order(actors: Actors, names: list[str], limit: int) -> None:
    """Paged or not, the same writers in the same order (the database's order of the slugs)."""
    services = services_of(actors.client)
    with services.db.sessions() as session:
        session.execute(delete(Writer))
        slugs = sorted({slugify(name) for name in names})
        session.add_all(Writer(name=slug.upper(), slug=slug, created_at=services.clock()) for slug in slugs)
        session.commit()
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(len(slugs) + 2):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = actors.client.get("/api/writers", headers=actors.archivist, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        seen += [item["slug"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    whole = actors.client.get("/api/writers", headers=actors.archivist, params={"limit": 200}).json()
    assert seen == [item["slug"] for item in whole["items"]]
    assert sorted(seen) == slugs


@PAGING
@given(
    slug=st.text(min_size=1, max_size=210).filter(lambda s: s not in {".", ".."} and "/" not in s)
    | st.from_regex(SLUG_PATTERN, fullmatch=True),
    params=st.dictionaries(st.sampled_from(["cursor", "limit", "x"]), st.text(max_size=40), max_size=3),
)
def test_hostile_slugs_and_list_parameters_get_a_clear_answer(
    actors: Actors, slug: str, params: dict[str, str]
) -> None:
    response = actors.client.get(f"/api/writers/{quote(slug, safe='')}", headers=actors.archivist)
    # No writer exists: a slug of the shape slugs have is not found, anything else is malformed.
    expected = (404, "WRITER_NOT_FOUND") if re.fullmatch(SLUG_PATTERN, slug) else (422, "INVALID_REQUEST")
    assert (response.status_code, response.json()["code"]) == expected
    listed = actors.client.get("/api/writers", headers=actors.archivist, params=params)
    assert listed.status_code in (200, 422), listed.text
    if listed.status_code == 200:
        assert listed.json() == {"items": [], "nextCursor": None}
    else:
        assert listed.json()["code"] == "INVALID_REQUEST"
