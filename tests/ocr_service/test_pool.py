"""The worker pool with real worker processes and a fake engine (tests/support/fake_engine.py):
a page that ends its worker costs only its own document; hangs, cancellation, lent threads,
replacement and shutdown."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image

from ocr_service.admission import PageMemory, Reservation
from ocr_service.engine.pipeline import PageResult
from ocr_service.errors import AppError, ErrorCode
from ocr_service.pool import WorkerPool
from ocr_service.workers.supervisor import WorkerStartError, threads_for
from tests.support.fake_engine import ENGINE, fake_page, instructions, tries

PoolFactory = Callable[..., WorkerPool]


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[PoolFactory]:
    """Start a pool of fake-engine workers; every pool is shut down when the test ends."""
    started: list[WorkerPool] = []

    def start(workers: int = 2, segmentation: Path | None = None, **options: Any) -> WorkerPool:
        options.setdefault("threads_per_worker", 1)
        pool = WorkerPool(workers=workers, segmentation_file=lambda: segmentation, engine=ENGINE, **options)
        started.append(pool)
        pool.start()
        return pool

    yield start
    for pool in started:
        pool.shutdown()


def wait_until(condition: Callable[[], bool], within_s: float = 30) -> None:
    """Wait for an event the test cannot be told about (a process ending, a line in a log)."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.01)


async def read_document(pool: WorkerPool, pages: list[Image.Image]) -> list[str] | AppError:
    """Pages one after another, like a document's reader: the first failure ends the document."""
    texts = []
    for page in pages:
        try:
            result: PageResult = await pool.process_page(page, None)
        except AppError as error:
            return error
        texts.append(result.lines[0].text)
    return texts


def spawned_workers(besides: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """This process's worker children (not multiprocessing's resource tracker, which stays),
    except ``besides``: workers of services other tests of the session keep running."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if child.pid not in besides
        and "spawn_main" in " ".join(child.cmdline())
        and child.status() != psutil.STATUS_ZOMBIE
    ]


def other_workers() -> frozenset[int]:
    return frozenset(child.pid for child in spawned_workers())


def pages_tried(log: Path) -> list[str]:
    return [t["page"] for t in tries(log)]


# --- a page that ends its worker ------------------------------------------------------------------


def test_a_page_that_kills_its_worker_twice_fails_its_document_alone_with_422(
    pools: PoolFactory, tmp_path: Path
) -> None:
    pool = pools(workers=2)
    documents = {
        "a": [fake_page(f"a{i}", log=tmp_path) for i in range(4)],
        "b": [fake_page("b0", log=tmp_path), fake_page("b1", "kill", log=tmp_path), fake_page("b2", log=tmp_path)],
        "c": [fake_page(f"c{i}", log=tmp_path) for i in range(3)],
    }

    async def read_all() -> list[list[str] | AppError]:
        return await asyncio.gather(*(read_document(pool, pages) for pages in documents.values()))

    a, b, c = asyncio.run(read_all())
    assert a == ["a0", "a1", "a2", "a3"]
    assert c == ["c0", "c1", "c2"]
    assert isinstance(b, AppError)
    assert (b.code, b.status) == (ErrorCode.PAGE_KILLED_WORKER, 422)
    tried = pages_tried(tmp_path)
    assert tried.count("b1") == 2  # tried once more on another worker, then given up
    assert "b2" not in tried
    assert all(tried.count(page) == 1 for page in tried if page != "b1")


def test_a_page_that_exits_its_worker_is_the_same_as_one_killed_by_the_kernel(
    pools: PoolFactory, tmp_path: Path
) -> None:
    pool = pools(workers=1)
    outcome = asyncio.run(read_document(pool, [fake_page("x", "exit", log=tmp_path)]))
    assert isinstance(outcome, AppError) and outcome.code is ErrorCode.PAGE_KILLED_WORKER
    assert pages_tried(tmp_path) == ["x", "x"]
    assert asyncio.run(read_document(pool, [fake_page("next")])) == ["next"]


def test_a_page_that_kills_its_worker_once_is_read_on_its_second_try(pools: PoolFactory, tmp_path: Path) -> None:
    pool = pools(workers=1)
    first_worker = pool.info[0].pid
    texts = asyncio.run(read_document(pool, [fake_page("p", "kill-once", log=tmp_path)]))
    assert texts == ["p"]
    first, second = tries(tmp_path)
    assert first["pid"] == first_worker and second["pid"] != first_worker


def test_random_interleavings_of_good_and_killing_pages_read_every_good_page_exactly_once(
    pools: PoolFactory, tmp_path: Path
) -> None:
    pool = pools(workers=2)
    tries_per_kind = {"ok": 1, "kill": 2, "kill-once": 2}
    for seed in range(6):
        rng = random.Random(seed)
        log = tmp_path / f"seed-{seed}"
        log.mkdir()
        documents: list[list[Image.Image]] = []
        for d in range(rng.randint(2, 4)):
            kinds = rng.choices(["ok", "kill", "kill-once"], weights=[8, 1, 1], k=rng.randint(1, 4))
            documents.append([fake_page(f"d{d}p{p}", kind, log=log) for p, kind in enumerate(kinds)])
        delays = [rng.random() * 0.05 for _ in documents]

        async def read_all(documents: list[list[Image.Image]] = documents, delays: list[float] = delays) -> list[Any]:
            async def arriving(pages: list[Image.Image], delay: float) -> list[str] | AppError:
                await asyncio.sleep(delay)  # varies only the order in which pages meet workers
                return await read_document(pool, pages)

            return await asyncio.gather(
                *(arriving(pages, delay) for pages, delay in zip(documents, delays, strict=True))
            )

        outcomes = asyncio.run(read_all())
        tried = pages_tried(log)
        for pages, outcome in zip(documents, outcomes, strict=True):
            steps = [instructions(page) for page in pages]
            killer = next((i for i, step in enumerate(steps) if step["do"] == "kill"), None)
            if killer is None:
                assert outcome == [step["page"] for step in steps], seed
            else:
                assert isinstance(outcome, AppError) and outcome.code is ErrorCode.PAGE_KILLED_WORKER, seed
            for step in steps[: None if killer is None else killer + 1]:
                assert tried.count(step["page"]) == tries_per_kind[step["do"]], (seed, step)
            for step in steps[len(steps) if killer is None else killer + 1 :]:
                assert step["page"] not in tried, (seed, step)


# --- hangs ------------------------------------------------------------------------------------------


def test_a_page_over_the_time_limit_is_a_page_timeout_without_a_second_try_and_spares_its_neighbours(
    pools: PoolFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = pools(workers=2, page_timeout_s=0.5)
    stuck = fake_page("stuck", "hang", log=tmp_path)
    neighbours = [fake_page(f"n{i}", log=tmp_path) for i in range(3)]

    async def read_all() -> list[list[str] | AppError]:
        return await asyncio.gather(read_document(pool, [stuck]), read_document(pool, neighbours))

    hung, read = asyncio.run(read_all())
    assert isinstance(hung, AppError) and (hung.code, hung.status) == (ErrorCode.PAGE_TIMEOUT, 422)
    assert "longer than the limit of 0.5 s" in hung.message
    assert read == ["n0", "n1", "n2"]
    assert pages_tried(tmp_path).count("stuck") == 1
    # the worker's watchdog wrote where the page hung, and the service logged it
    assert "Where it hung" in caplog.text and "in process" in caplog.text
    assert asyncio.run(read_document(pool, [fake_page("after")])) == ["after"]


def test_a_page_whose_watchdog_cannot_fire_is_ended_by_the_service_after_a_grace(
    pools: PoolFactory, tmp_path: Path
) -> None:
    pool = pools(workers=1, page_timeout_s=0.3, kill_grace_s=0.2)
    stuck_worker = pool.info[0].pid
    outcome = asyncio.run(read_document(pool, [fake_page("stuck", "hang-unwatched", log=tmp_path)]))
    assert isinstance(outcome, AppError) and outcome.code is ErrorCode.PAGE_TIMEOUT
    assert not psutil.pid_exists(stuck_worker)
    assert asyncio.run(read_document(pool, [fake_page("after")])) == ["after"]


# --- a worker that dies by itself ----------------------------------------------------------------


def test_a_worker_killed_while_idle_is_replaced_and_the_next_page_is_read(pools: PoolFactory, tmp_path: Path) -> None:
    pool = pools(workers=2)
    victim = pool.info[0].pid
    os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
    wait_until(lambda: victim not in [w.pid for w in pool.info] and len(pool.info) == 2)
    assert not psutil.pid_exists(victim)
    texts = asyncio.run(read_document(pool, [fake_page(f"p{i}", log=tmp_path) for i in range(4)]))
    assert texts == ["p0", "p1", "p2", "p3"]
    assert pages_tried(tmp_path) == ["p0", "p1", "p2", "p3"]


def test_a_replacement_that_cannot_start_fails_the_waiting_page_with_503_and_the_pool_recovers(
    pools: PoolFactory, tmp_path: Path
) -> None:
    pool = pools(workers=1, segmentation=tmp_path / "refuse-seg.mlmodel")
    (tmp_path / "refuse").touch()
    outcome = asyncio.run(read_document(pool, [fake_page("p", "kill-once", log=tmp_path)]))
    assert isinstance(outcome, AppError) and (outcome.code, outcome.status) == (ErrorCode.MODELS_NOT_READY, 503)
    assert not pool.ready  # /health says so, and new documents are refused with 503
    (tmp_path / "refuse").unlink()
    wait_until(lambda: pool.ready)  # started again after a short back-off
    assert asyncio.run(read_document(pool, [fake_page("q")])) == ["q"]


def test_a_worker_that_cannot_load_its_models_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "refuse").touch()
    others = other_workers()
    pool = WorkerPool(2, 1, lambda: tmp_path / "refuse-seg.mlmodel", engine=ENGINE)
    try:
        with pytest.raises(WorkerStartError, match="told not to start"):
            pool.start()
        assert not pool.ready
    finally:
        pool.shutdown()
    assert not spawned_workers(others)


# --- errors the engine reports ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("do", "code", "status"),
    [("fail", ErrorCode.OCR_FAILED, 500), ("wrong-kind", ErrorCode.WRONG_MODEL_KIND, 422)],
)
def test_an_error_on_a_page_is_its_own_and_the_worker_reads_on(
    pools: PoolFactory, do: str, code: ErrorCode, status: int
) -> None:
    pool = pools(workers=1)
    worker = pool.info[0].pid
    outcome = asyncio.run(read_document(pool, [fake_page("p", do)]))
    assert isinstance(outcome, AppError) and (outcome.code, outcome.status) == (code, status)
    assert asyncio.run(read_document(pool, [fake_page("q")])) == ["q"]
    assert [w.pid for w in pool.info] == [worker]


# --- cancelling ------------------------------------------------------------------------------------


def test_a_cancelled_page_that_waits_for_a_worker_never_starts(pools: PoolFactory, tmp_path: Path) -> None:
    pool = pools(workers=1)
    gate = tmp_path / "gate"

    async def scenario() -> list[str]:
        busy = asyncio.create_task(pool.process_page(fake_page("busy", log=tmp_path, gate=gate), None))
        await asyncio.to_thread(wait_until, lambda: pages_tried(tmp_path) == ["busy"])
        waiting = asyncio.create_task(pool.process_page(fake_page("cancelled", log=tmp_path), None))
        await asyncio.sleep(0)  # queued behind the busy page
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.touch()
        return [
            (await busy).lines[0].text,
            (await pool.process_page(fake_page("next", log=tmp_path), None)).lines[0].text,
        ]

    assert asyncio.run(scenario()) == ["busy", "next"]
    assert pages_tried(tmp_path) == ["busy", "next"]


def test_a_cancelled_page_on_a_worker_is_dropped_and_the_worker_reads_on(pools: PoolFactory, tmp_path: Path) -> None:
    pool = pools(workers=1)
    gate = tmp_path / "gate"

    async def scenario() -> str:
        running = asyncio.create_task(pool.process_page(fake_page("dropped", log=tmp_path, gate=gate), None))
        await asyncio.to_thread(wait_until, lambda: pages_tried(tmp_path) == ["dropped"])
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        gate.touch()
        return (await pool.process_page(fake_page("next", log=tmp_path), None)).lines[0].text

    assert asyncio.run(scenario()) == "next"
    assert pages_tried(tmp_path) == ["dropped", "next"]


# --- page memory: a page is let go when no worker holds it ---------------------------------------

UNIT = 1000  # the page memory each test page reserves


async def until(condition: Callable[[], bool]) -> None:
    """Wait on the loop (the pool lets pages go through it) for what the workers do on their own time."""
    for _ in range(15_000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the condition never came true")


@pytest.mark.parametrize("worker_lets_go_by", ["finishing", "dying"])
def test_an_abandoned_page_gives_its_memory_back_only_when_its_worker_lets_it_go(
    pools: PoolFactory, tmp_path: Path, worker_lets_go_by: str
) -> None:
    pool = pools(workers=1)
    gate = tmp_path / "gate"

    async def scenario() -> list[str]:
        memory = PageMemory(10 * UNIT)
        on_worker, queued = await memory.acquire(UNIT), await memory.acquire(UNIT)
        running = asyncio.create_task(
            pool.process_page(fake_page("held", log=tmp_path, gate=gate), None, let_go=on_worker.release)
        )
        await asyncio.to_thread(wait_until, lambda: pages_tried(tmp_path) == ["held"])
        waiting = asyncio.create_task(pool.process_page(fake_page("queued"), None, let_go=queued.release))
        await asyncio.sleep(0)
        for task in (running, waiting):  # both readers leave
            task.cancel()
        await asyncio.gather(running, waiting, return_exceptions=True)
        # The queued page is dropped at once; the one on the worker is still there (its
        # worker waits for the gate), and so is its memory.
        await until(lambda: not queued.held)
        assert (on_worker.held, memory.held) == (True, UNIT)
        if worker_lets_go_by == "finishing":
            gate.touch()
        else:
            os.kill(pool.info[0].pid, signal.SIGKILL)
        await until(lambda: memory.held == 0)
        assert not on_worker.held
        gate.touch()
        return [(await pool.process_page(fake_page("next", log=tmp_path), None)).lines[0].text]

    assert asyncio.run(scenario()) == ["next"]
    # An abandoned page whose worker died is not tried again: nobody waits for it.
    assert pages_tried(tmp_path) == ["held", "next"]


def _pages_the_workers_hold(pool: WorkerPool) -> list[Image.Image]:
    """The images the supervisor holds now (queued or on a worker); read from its state."""
    supervisor = pool._supervisor
    held = [w.job.image for w in supervisor._workers if w.job is not None]
    with supervisor._queue._lock:
        held += [job.image for job in supervisor._queue._jobs]
    return held


@pytest.mark.parametrize("seed", range(6))
def test_random_abandon_timings_never_free_the_memory_of_a_page_a_worker_still_holds(
    pools: PoolFactory, tmp_path: Path, seed: int
) -> None:
    """Pages that finish at once or wait for a gate, readers that leave at random moments, gates
    opened at random: whatever the workers hold keeps its memory, the reserved total never
    exceeds the budget, and all of it comes back."""
    rng = random.Random(seed)
    pool = pools(workers=2)
    gates = [tmp_path / f"gate-{i}" for i in range(16)]
    pages = [fake_page(f"p{i}", log=tmp_path, gate=gates[i] if rng.random() < 0.6 else None) for i in range(len(gates))]
    limit = rng.randint(2, 5) * UNIT

    async def scenario() -> None:
        memory = PageMemory(limit)
        reservations: dict[int, Reservation] = {}
        broken: list[str] = []

        async def read(page: Image.Image) -> None:
            reservation = await memory.acquire(UNIT)
            reservations[id(page)] = reservation
            await pool.process_page(page, None, let_go=reservation.release)

        async def watch() -> None:
            while True:
                if memory.held > limit:
                    broken.append(f"{memory.held} reserved of {limit}")
                for image in _pages_the_workers_hold(pool):
                    if not reservations[id(image)].held:
                        broken.append(f"{instructions(image)['page']} freed while a worker holds it")
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        readers = []
        for page in pages:
            readers.append(asyncio.create_task(read(page)))
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(rng.choice([0, 0.002, 0.01]))
                choice = rng.random()
                if choice < 0.35:
                    readers[rng.randrange(len(readers))].cancel()
                elif choice < 0.7:
                    rng.choice(gates).touch()
        for gate in gates:
            await asyncio.sleep(rng.choice([0, 0.005]))
            gate.touch()
        await asyncio.gather(*readers, return_exceptions=True)
        await until(lambda: memory.held == 0 and not _pages_the_workers_hold(pool))
        watcher.cancel()
        assert broken == []
        assert memory.peak <= limit and memory.waiting == 0
        assert all(not r.held for r in reservations.values())

    asyncio.run(scenario())


# --- threads ---------------------------------------------------------------------------------------


def test_a_page_alone_uses_the_idle_workers_cores_and_overlapping_pages_their_share(
    pools: PoolFactory, tmp_path: Path
) -> None:
    pool = pools(workers=3, threads_per_worker=2)  # 6 threads in all
    gates = [tmp_path / f"gate-{i}" for i in range(3)]

    async def scenario() -> None:
        first = asyncio.create_task(pool.process_page(fake_page("alone", log=tmp_path, gate=gates[0]), None))
        await asyncio.to_thread(wait_until, lambda: len(tries(tmp_path)) == 1)
        second = asyncio.create_task(pool.process_page(fake_page("beside", log=tmp_path, gate=gates[1]), None))
        await asyncio.to_thread(wait_until, lambda: len(tries(tmp_path)) == 2)
        for gate in gates:
            gate.touch()
        await asyncio.gather(first, second)
        await pool.process_page(fake_page("alone-again", log=tmp_path), None)

    asyncio.run(scenario())
    assert [(t["page"], t["threads"]) for t in tries(tmp_path)] == [("alone", 6), ("beside", 2), ("alone-again", 6)]


def test_lent_threads_never_leave_a_page_below_its_share_or_above_all_cores() -> None:
    rng = random.Random(12)
    for _ in range(2000):
        share = rng.randint(1, 4)
        workers = rng.randint(1, 8)
        cores = workers * share
        held: list[int] = []
        for _ in range(rng.randint(1, 30)):
            if held and (len(held) == workers or rng.random() < 0.4):
                held.pop(rng.randrange(len(held)))
                continue
            idle = workers - len(held)
            starting = rng.randint(0, idle - 1)
            threads = threads_for(share, cores, held, starting)
            assert share <= threads <= cores
            if not held and starting == 0:
                assert threads == cores  # alone: every core
            # never more than the cores, but for a page's own share that running pages borrowed
            assert sum(held) + threads + starting * share <= max(cores, sum(held) + (starting + 1) * share)
            held.append(threads)


# --- stopping --------------------------------------------------------------------------------------


def test_shutdown_stops_every_worker_and_fails_the_page_on_one(tmp_path: Path) -> None:
    others = other_workers()
    pool = WorkerPool(2, 1, lambda: None, engine=ENGINE)
    pool.start()
    workers = [w.pid for w in pool.info]

    async def scenario() -> AppError:
        running = asyncio.create_task(pool.process_page(fake_page("never", log=tmp_path, gate=tmp_path / "g"), None))
        await asyncio.to_thread(wait_until, lambda: len(tries(tmp_path)) == 1)
        await asyncio.to_thread(pool.shutdown)
        with pytest.raises(AppError) as failed:
            await running
        return failed.value

    failed = asyncio.run(scenario())
    assert (failed.code, failed.status) == (ErrorCode.MODELS_NOT_READY, 503)
    assert not any(psutil.pid_exists(pid) for pid in workers)
    assert not spawned_workers(others)
    assert not pool.ready


SERVICE = """
import sys, time
from ocr_service.pool import WorkerPool
pool = WorkerPool(2, 1, lambda: None, engine=sys.argv[1])
pool.start()
print(" ".join(str(w.pid) for w in pool.info), flush=True)
time.sleep(3600)
"""


def test_workers_end_when_the_service_process_is_killed() -> None:
    service = subprocess.Popen([sys.executable, "-c", SERVICE, ENGINE], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        assert len(workers) == 2
    finally:
        service.kill()
        service.wait()
    # Nothing could stop them: a worker ends because its pipe to the service closed.
    wait_until(lambda: not any(_alive(pid) for pid in workers))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


ROOT = Path(__file__).resolve().parents[2]
