"""Where searches run (backend/search/runner.py): one at a time in the backend's process, or in
worker processes (APP_SEARCH_PROCESSES) that answer exactly as the backend would, see what was
committed before the search began, are replaced when they die and end when the backend dies;
past APP_SEARCH_MAX_PENDING searches at once, one more is refused at once (503 SEARCH_BUSY)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from backend.db import Database
from backend.errors import AppError, ErrorCode
from backend.search.runner import SearchRunner, SearchWorkersFailedError
from backend.search.schemas import SearchOut, SearchParams
from backend.search.service import SearchLimits
from backend.settings import Settings
from tests.backend.conftest import PASSWORD, Actors, AppFactory, FakeClock, services_of
from tests.backend.search_support import correct, document, hit_lines, line_ids

ROOT = Path(__file__).resolve().parents[2]

QUERIES: list[dict[str, str]] = [
    {"q": "Grüße"},
    {"q": "gruesse"},
    {"q": "Weihnachten"},
    {"q": '"liebe Mutter"'},
    {"q": "Mutter -Krieg"},
    {"q": "Mutter", "pageSize": "1", "page": "2"},
    {"q": "Hof", "dateFrom": "1900-01-01", "dateTo": "1920-12-31"},
    {"q": "nirgendwo"},
]


def _archive(actors: Actors) -> list[int]:
    first = document(
        actors,
        ["Viele Grüße aus Köln", "an Weihnachten zu Hause", "Meine liebe Mutter!"],
        ["Mutter schreibt vom Krieg", "zu Weihnaehten bei euch", "der Hof am Weih-", "nachten"],
        title="Brief an Anna",
        date="1911-05-03",
    )
    second = document(actors, ["herzliche Gruesse", "Mutter schreibt vom Garten", "der Hof"], date="1935-01-02")
    return [first, second]


def _answer(client: Any, headers: dict[str, str], params: dict[str, str]) -> tuple[int, Any]:
    response = client.get("/api/search", params=params, headers=headers)
    return response.status_code, response.json()


def test_worker_processes_answer_exactly_as_the_backend_does(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    _archive(actors)
    workers = app_factory(clock=clock, search_processes=2)
    assert services_of(workers).searches.processes == 2
    for params in QUERIES:
        here = _answer(actors.client, actors.archivist, params)
        there = _answer(workers, actors.archivist, params)
        assert here[0] == 200, here
        assert there == here, params


def test_a_correction_is_found_by_the_very_next_search_in_a_worker(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    document_id = document(actors, ["die Kuh im Stall", "das Pferd"])
    workers = app_factory(clock=clock, search_processes=1)
    headers = actors.archivist
    assert _answer(workers, headers, {"q": "Ochse"})[1]["total"] == 0
    line = line_ids(actors, document_id)[0]
    correct(actors, line, "der Ochse im Stall")
    status, answer = _answer(workers, headers, {"q": "Ochse"})
    assert status == 200
    assert hit_lines(answer) == [line]
    # ... and no longer by the words it lost.
    assert line not in hit_lines(_answer(workers, headers, {"q": "Kuh"})[1])


def test_a_worker_refuses_a_bad_query_as_the_backend_does(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    workers = app_factory(clock=clock, search_processes=1)
    for q in ["-Krieg", "x" * 201, '""', "a b c d e f g h i j k"]:
        status, body = _answer(workers, actors.archivist, {"q": q})
        assert (status, body["code"]) == (422, "SEARCH_QUERY_INVALID"), q
        assert body == _answer(actors.client, actors.archivist, {"q": q})[1]


def test_searches_in_workers_need_a_login(actors: Actors, app_factory: AppFactory, clock: FakeClock) -> None:
    workers = app_factory(clock=clock, search_processes=1)
    for headers in [{}, {"Authorization": "Bearer nope"}]:
        status, body = _answer(workers, headers, {"q": "Mutter"})
        assert (status, body["code"]) == (401, "NOT_AUTHENTICATED")


def _search_workers() -> set[psutil.Process]:
    return {p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())}


def test_a_killed_worker_is_replaced_and_no_search_fails(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    _archive(actors)
    before = _search_workers()
    workers = app_factory(clock=clock, search_processes=2)
    first = _search_workers() - before
    assert len(first) == 2, "both workers start with the backend, not at the first search"
    expected = _answer(actors.client, actors.archivist, {"q": "Mutter"})
    generation = first
    for _ in range(2):
        victim = next(iter(generation))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        # The search that finds the pool broken is tried again in a new one: nobody sees the death.
        assert _answer(workers, actors.archivist, {"q": "Mutter"}) == expected
        # A broken pool ends its other worker too; the new pool's serve from now on.
        psutil.wait_procs(list(generation), timeout=10)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in generation)
        generation = _search_workers() - before - first
        assert generation, "new workers took over"
        first |= generation


class _BrokenPool:
    """An executor whose every worker has died."""

    def __init__(self) -> None:
        self.shut = False

    def submit(self, *_: object) -> Future[object]:
        future: Future[object] = Future()
        future.set_exception(BrokenProcessPool("a worker died"))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shut = True


def test_workers_dying_again_and_again_is_a_503_not_a_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    runner = SearchRunner(Database(url), url, SearchLimits(5, 300), processes=2)
    pools: list[_BrokenPool] = []

    def new_pool() -> _BrokenPool:
        pools.append(_BrokenPool())
        return pools[-1]

    monkeypatch.setattr(runner, "_new_pool", new_pool)
    with pytest.raises(AppError) as raised:
        asyncio.run(runner.json(SearchParams.model_validate({"q": "Mutter"})))
    assert raised.value.code is ErrorCode.SEARCH_UNAVAILABLE
    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": "30"}
    assert len(pools) == 2 and all(pool.shut for pool in pools), "each broken pool replaced, once tried again"


def test_many_searches_at_once_wait_their_turn_without_holding_connections(actors: Actors) -> None:
    """Forty searches in flight, one running at a time: had each held its pooled connection while
    waiting (the pool has 15), the running one could not get one and all would time out."""
    _archive(actors)
    expected = _answer(actors.client, actors.archivist, {"q": "Mutter"})
    with ThreadPoolExecutor(40) as threads:
        answers = list(
            threads.map(lambda _: _answer(actors.client, actors.archivist, {"q": "Mutter"}), range(40), timeout=60)
        )
    assert answers == [expected] * 40


def test_the_search_page_runs_through_the_workers_too(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    _archive(actors)
    workers = app_factory(clock=clock, search_processes=1)
    login = workers.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text
    page = workers.get("/search", params={"q": "Weihnachten"}, headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    assert "Brief an Anna" in page.text
    refused = workers.get("/search", params={"q": "-Krieg"}, headers={"Accept": "text/html"})
    assert refused.status_code == 200 and "Brief an Anna" not in refused.text


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:x?mode=memory&uri=true",
        # The same databases of this process alone, spelt with options or escapes.
        "sqlite://?check_same_thread=false",
        "sqlite:///?check_same_thread=false",
        "sqlite:///%3Amemory%3A",
        "sqlite:///file:x?uri=true&mode=%6Demory",
        "sqlite:///file:?uri=true",
    ],
)
def test_workers_are_refused_for_a_database_in_memory(url: str) -> None:
    with pytest.raises(ValidationError, match="APP_SEARCH_PROCESSES"):
        Settings(database_url=url, search_processes=1)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///./data/backend.db",
        "sqlite:////srv/archive/backend.db?timeout=5",
        "sqlite:///file:data/backend.db?uri=true",
        "postgresql://archive@db:5432/archive",
    ],
)
def test_workers_are_allowed_for_a_database_file_or_server(url: str) -> None:
    assert Settings(database_url=url, search_processes=2).search_processes == 2


def test_workers_end_when_the_backend_is_killed(tmp_path: Path) -> None:
    """A backend killed with SIGKILL cannot stop its workers: they notice and end by themselves."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    script = textwrap.dedent(
        f"""
        import time
        from backend.db import Database
        from backend.search.runner import SearchRunner, SearchWorkersFailedError
        from backend.search.service import SearchLimits
        runner = SearchRunner(Database({url!r}), {url!r}, SearchLimits(5, 300), processes=2)
        runner.start()
        print("started", flush=True)
        time.sleep(600)
        """
    )
    backend = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert backend.stdout is not None
        assert backend.stdout.readline().strip() == "started"
        children = psutil.Process(backend.pid).children()
        assert len(children) >= 2
        backend.send_signal(signal.SIGKILL)
        backend.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"workers outlived the backend: {alive}"
    finally:
        if backend.poll() is None:
            backend.kill()
            backend.wait()


def test_a_closed_runner_starts_no_new_workers(tmp_path: Path) -> None:
    """A search that arrives after shutdown is refused: new workers then would outlive the
    backend's own shutdown (nothing would close them)."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    runner = SearchRunner(Database(url), url, SearchLimits(5, 300), processes=1)
    runner.start()
    runner.close()
    before = _search_workers()
    with pytest.raises(AppError) as raised:
        asyncio.run(runner.json(SearchParams.model_validate({"q": "Mutter"})))
    assert raised.value.code is ErrorCode.SEARCH_UNAVAILABLE
    assert _search_workers() - before == set()
    runner.close()


def test_workers_that_cannot_start_stop_the_backend_from_starting(tmp_path: Path) -> None:
    url = "sqlite:////proc/no-such-folder/x.db"  # the worker's engine cannot make its folder
    runner = SearchRunner(Database(f"sqlite:///{tmp_path / 'x.db'}"), url, SearchLimits(5, 300), processes=1)
    try:
        with pytest.raises(SearchWorkersFailedError, match="APP_SEARCH_PROCESSES"):
            runner.start()
    finally:
        runner.close()


def test_many_search_pages_at_once_wait_their_turn_without_holding_connections(actors: Actors) -> None:
    """Forty search pages in flight, one search at a time: a page that kept its pooled connection
    while waiting (the pool has 15) would leave the running search none, and all would time out
    (checked: with the page's session left open this fails after the pool's 30 s)."""
    _archive(actors)
    login = actors.client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text

    def page(_: int) -> tuple[int, bool]:
        response = actors.client.get("/search", params={"q": "Mutter"}, headers={"Accept": "text/html"})
        return response.status_code, "Brief an Anna" in response.text

    with ThreadPoolExecutor(40) as threads:
        answers = list(threads.map(page, range(40), timeout=60))
    assert answers == [(200, True)] * 40


class _Held:
    """Searches that wait inside the runner until let go (the search itself replaced)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, runner: SearchRunner) -> None:
        self.go = threading.Event()
        self.started = 0
        self._lock = threading.Lock()

        def held(params: SearchParams) -> SearchOut:
            with self._lock:
                self.started += 1
            assert self.go.wait(30), "the test lets every held search go"
            if params.q == "-Krieg":
                raise AppError(ErrorCode.SEARCH_QUERY_INVALID, "only exclusions")
            return SearchOut(query=params.q, total=0, page=1, page_size=params.page_size, capped=False, results=[])

        monkeypatch.setattr(runner, "_search_here", held)


async def _until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("max_pending", "extra"), [(1, 1), (2, 5), (5, 3), (9, 12)])
def test_searches_past_the_pending_limit_are_refused_at_once_and_the_others_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_pending: int, extra: int
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    runner = SearchRunner(Database(url), url, SearchLimits(5, 300), processes=0, max_pending=max_pending)
    held = _Held(monkeypatch, runner)
    rng = random.Random(max_pending * 100 + extra)

    async def scenario() -> None:
        # Held searches of both kinds (JSON and model), some of them failing: each holds a place.
        calls = [runner.json, runner.result]
        queries = ["Mutter" if rng.random() < 0.7 else "-Krieg" for _ in range(max_pending)]
        tasks = [asyncio.create_task(rng.choice(calls)(SearchParams(q=q))) for q in queries]
        await _until(lambda: runner.pending == max_pending)
        for _ in range(extra):
            with pytest.raises(AppError) as raised:
                await rng.choice(calls)(SearchParams(q="Vater"))
            assert raised.value.code is ErrorCode.SEARCH_BUSY
            assert raised.value.status == 503
            assert raised.value.headers is not None and 3 <= int(raised.value.headers["Retry-After"]) <= 8
        assert runner.pending == max_pending, "a refused search holds no place"
        held.go.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for q, outcome in zip(queries, outcomes, strict=True):
            if q == "-Krieg":
                assert isinstance(outcome, AppError) and outcome.code is ErrorCode.SEARCH_QUERY_INVALID
            else:
                assert not isinstance(outcome, BaseException), outcome
        # Every place is given back, by answered and by failed searches alike.
        assert runner.pending == 0
        again = await asyncio.gather(*(runner.json(SearchParams(q="Mutter")) for _ in range(max_pending)))
        assert len(again) == max_pending

    try:
        asyncio.run(scenario())
    finally:
        held.go.set()  # a failed assertion leaves no search held
    assert held.started == 2 * max_pending, "no refused search ran"


def test_a_busy_search_is_a_503_with_retry_after_in_the_api_and_a_message_on_the_page(
    actors: Actors, app_factory: AppFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory(clock=clock, search_max_pending=1)
    runner = services_of(app).searches
    held = _Held(monkeypatch, runner)
    login = app.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text
    try:
        with ThreadPoolExecutor(1) as threads:
            first = threads.submit(_answer, app, actors.archivist, {"q": "Mutter"})
            deadline = time.monotonic() + 30
            while runner.pending < 1:
                assert time.monotonic() < deadline and not first.done(), "the first search is held"
                time.sleep(0.01)
            refused = app.get("/api/search", params={"q": "Vater"}, headers=actors.archivist)
            assert refused.status_code == 503
            assert 3 <= int(refused.headers["Retry-After"]) <= 8
            assert refused.json()["code"] == "SEARCH_BUSY"
            page = app.get("/search", params={"q": "Vaters Hof"}, headers={"Accept": "text/html"})
            assert page.status_code == 503 and 3 <= int(page.headers["Retry-After"]) <= 8
            # The reason in the person's language, above the form that keeps what was typed.
            assert "Gerade suchen sehr viele gleichzeitig" in page.text
            assert 'value="Vaters Hof"' in page.text
            held.go.set()
            assert first.result(timeout=30)[0] == 200
    finally:
        held.go.set()  # a failed assertion leaves no search held
    assert runner.pending == 0
    assert app.get("/api/search", params={"q": "Vater"}, headers=actors.archivist).status_code == 200


def test_the_pending_limit_is_a_setting_with_a_sane_range() -> None:
    assert Settings().search_max_pending == 100
    for wrong in (0, -1, 100_001):
        with pytest.raises(ValidationError, match="search_max_pending"):
            Settings(search_max_pending=wrong)


@pytest.mark.parametrize("stage", ["waiting", "running"])
def test_a_search_whose_caller_stops_waiting_keeps_its_place_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """A timeout around the call or a shutdown cancels the caller, not the search already in a
    thread: its place (and its slot) are given back when it ends, so abandoned searches cannot
    run past the bound."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    runner = SearchRunner(Database(url), url, SearchLimits(5, 300), processes=0, max_pending=2)
    held = _Held(monkeypatch, runner)

    async def scenario() -> None:
        running = asyncio.create_task(runner.json(SearchParams(q="Mutter")))
        await _until(lambda: held.started == 1)
        # The second waits for the one slot (SQLite) behind the first, which is running.
        waiting = asyncio.create_task(runner.json(SearchParams(q="Vater")))
        await _until(lambda: runner.pending == 2)
        abandoned = running if stage == "running" else waiting
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        if stage == "running":
            assert runner.pending == 2, "the running search keeps its place until it ends"
            with pytest.raises(AppError) as raised:
                await runner.json(SearchParams(q="Hof"))
            assert raised.value.code is ErrorCode.SEARCH_BUSY
        held.go.set()
        await _until(lambda: runner.pending == 0)
        kept = waiting if stage == "running" else running
        assert json.loads(await kept)["query"] in {"Mutter", "Vater"}
        # The abandoned search ran (or ran to its end) without a caller, and every place came back.
        assert held.started == 2
        assert json.loads(await runner.json(SearchParams(q="Hof")))["query"] == "Hof"

    try:
        asyncio.run(scenario())
    finally:
        held.go.set()


def test_a_search_that_is_unavailable_is_said_on_the_page_with_its_form(
    actors: Actors, app_factory: AppFactory, clock: FakeClock
) -> None:
    app = app_factory(clock=clock, search_processes=1)
    login = app.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text
    services_of(app).searches.close()  # as after workers that died twice: no search can run
    page = app.get("/search", params={"q": "Vaters Hof"}, headers={"Accept": "text/html"})
    assert page.status_code == 503 and page.headers["Retry-After"] == "30"
    assert "Die Suche ist gerade nicht verfügbar" in page.text
    assert 'value="Vaters Hof"' in page.text
    answer = app.get("/api/search", params={"q": "Vater"}, headers=actors.archivist)
    assert (answer.status_code, answer.json()["code"]) == (503, "SEARCH_UNAVAILABLE")
