"""Admission and page memory: documents by count, pages by bytes, and nothing is ever lost.

Unit level (no HTTP, no kraken): seeded random schedules of many documents and pages, with
clients that leave at random points, against the invariants the read path promises.
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import pytest
from PIL import Image

from ocr_service.admission import Admission, PageMemory, page_cost
from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError, ErrorCode
from ocr_service.fetch import DocumentFetcher, FetchPolicy
from ocr_service.model_ref import ModelRef
from ocr_service.ocr import OcrInput, OcrService, PageDone
from ocr_service.settings import SERVICE_BASE_MEMORY_MB, SERVICE_PROCESS_MEMORY_MB, Settings
from tests.support.held_pool import HeldPool
from tests.support.synthetic import to_pdf, to_tiff

# --- Admission ------------------------------------------------------------------------------


def test_admission_refuses_the_document_after_the_limit_with_retry_after() -> None:
    admission = Admission(limit=3, retry_after_s=7)
    slots = [admission.enter() for _ in range(3)]
    with pytest.raises(AppError) as refused:
        admission.enter()
    assert refused.value.code is ErrorCode.SERVICE_BUSY
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "7"}
    slots[0].release()
    slots[0].release()  # a second release of the same slot frees nothing more
    assert admission.active == 2
    admission.enter()
    assert admission.active == 3


@pytest.mark.parametrize("seed", range(20))
def test_admission_count_is_exact_under_any_order_of_enter_and_release(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.randint(1, 6)
    admission = Admission(limit, retry_after_s=1)
    held = []
    for _ in range(300):
        if rng.random() < 0.55:
            try:
                held.append(admission.enter())
            except AppError as exc:
                assert exc.code is ErrorCode.SERVICE_BUSY
                assert len(held) == limit
        elif held:
            slot = held.pop(rng.randrange(len(held)))
            slot.release()
            if rng.random() < 0.3:
                slot.release()
        assert admission.active == len(held) <= limit
    for slot in held:
        slot.release()
    assert admission.active == 0


# --- PageMemory -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_page_memory_never_exceeds_its_limit_serves_in_order_and_gives_everything_back(seed: int) -> None:
    """Random page sizes (some larger than the whole budget), random hold times, random
    cancellations of waiting and of holding pages."""
    rng = random.Random(seed)
    limit = rng.randint(10, 100)

    async def scenario() -> None:
        memory = PageMemory(limit)
        granted_order: list[int] = []
        arrival_order: list[int] = []
        over: list[int] = []
        gates = [asyncio.Event() for _ in range(60)]

        async def page(number: int, size: int) -> None:
            arrival_order.append(number)
            async with memory.reserve(size) as got:
                assert got == min(size, limit)
                granted_order.append(number)
                if memory.held > limit:
                    over.append(memory.held)
                await gates[number].wait()

        tasks = []
        for number in range(60):
            tasks.append(asyncio.create_task(page(number, rng.randint(1, limit + limit // 2))))
            await asyncio.sleep(0)
            if rng.random() < 0.4:
                gates[rng.randrange(number + 1)].set()
            if rng.random() < 0.1:
                tasks[rng.randrange(len(tasks))].cancel()
            await asyncio.sleep(0)
        for gate in gates:
            gate.set()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert over == []
        assert memory.held == 0 and memory.waiting == 0
        assert memory.peak <= limit
        # First come, first served: no page is granted before one that arrived earlier and
        # was still waiting (cancelled ones drop out of the order).
        granted = [n for n in arrival_order if n in granted_order]
        assert granted_order == granted

    asyncio.run(scenario())


def test_a_page_larger_than_the_budget_waits_until_it_can_run_alone() -> None:
    async def scenario() -> list[str]:
        memory = PageMemory(100)
        steps: list[str] = []
        small_done = asyncio.Event()

        async def small() -> None:
            async with memory.reserve(30):
                steps.append("small holds")
                await small_done.wait()
            steps.append("small gone")

        async def huge() -> None:
            async with memory.reserve(500) as got:
                steps.append(f"huge holds {got} of {memory.held}")

        first = asyncio.create_task(small())
        await asyncio.sleep(0)
        second = asyncio.create_task(huge())
        await asyncio.sleep(0)
        assert memory.waiting == 1
        small_done.set()
        await asyncio.gather(first, second)
        return steps

    assert asyncio.run(scenario()) == ["small holds", "small gone", "huge holds 100 of 100"]


# --- the read path with page memory -----------------------------------------------------------


@dataclass
class _Pin:
    model: ModelRef | None
    segmentation_model: ModelRef
    released: int = 0

    def release(self) -> None:
        self.released += 1


class _Store:
    def __init__(self) -> None:
        self.pins: list[_Pin] = []

    def pin_models(self, name: str | None) -> _Pin:
        pin = _Pin(None, ModelRef(name="blla", path="/nonexistent/blla.mlmodel", stamp=(0, 0)))
        self.pins.append(pin)
        return pin


def _service(pool: HeldPool, memory: PageMemory, max_pages: int = 20) -> OcrService:
    return OcrService(
        limits=PageLimits(
            max_pages=max_pages,
            max_page_pixels=4_000_000,
            pdf_dpi=72,
            # Shapes are not under test here: random sizes include long strips.
            max_aspect_ratio=100,
            max_segmentation_width=1_000_000,
            open_timeout_s=5,
        ),
        store=_Store(),  # type: ignore[arg-type]
        pool=pool,  # type: ignore[arg-type]
        fetcher=DocumentFetcher(FetchPolicy(frozenset(), False, 1, 1.0, 0)),
        admission=Admission(50, 1),
        memory=memory,
    )


def _document(rng: random.Random) -> tuple[bytes, list[int]]:
    """A TIFF or PDF of 1-6 pages of random sizes, and each page's pixels."""
    sizes = [(rng.randint(20, 160), rng.randint(20, 160)) for _ in range(rng.randint(1, 6))]
    pages = [Image.new("RGB", size, (rng.randrange(256), 255, 255)) for size in sizes]
    if rng.random() < 0.5:
        return to_tiff(pages), [w * h for w, h in sizes]
    # at 72 dpi a PDF page of w×h points renders to w×h pixels
    return to_pdf(pages, dpi=72), [w * h for w, h in sizes]


@pytest.mark.parametrize("seed", range(12))
def test_pages_of_many_documents_stay_within_the_page_memory_and_leavers_free_everything(seed: int) -> None:
    rng = random.Random(seed)
    documents = [_document(rng) for _ in range(8)]
    biggest = max(page_cost(p) for _, pixels in documents for p in pixels)
    limit = rng.randint(biggest, 4 * biggest)
    # Each document's client stays to the end, or leaves after a random number of pages.
    leaves_after = [rng.choice([None, 0, 1, 2]) for _ in documents]

    async def scenario() -> None:
        pool = HeldPool(workers=rng.randint(1, 3), ready=True)
        memory = PageMemory(limit)
        service = _service(pool, memory)
        in_pool_bytes: list[int] = []
        uncovered: list[int] = []

        async def client(data: bytes, pixels: list[int], leave_after: int | None) -> list[int]:
            run = await service.start(OcrInput(file=io.BytesIO(data)))
            seen = []
            try:
                async for event in run.events():
                    if isinstance(event, PageDone):
                        seen.append(event.page)
                        if leave_after is not None and len(seen) > leave_after:
                            break
            finally:
                await run.aclose()
            return seen

        async def let_pages_go() -> None:
            # The pool finishes pages in bursts, so that pages pile up in between.
            while True:
                in_pool_bytes.append(memory.held)
                # Pages still in the pool (those of clients that left too) keep their memory.
                uncovered.append(page_cost(pool.pixels_in_pool) - memory.held)
                if rng.random() < 0.5:
                    pool.release.set()
                else:
                    pool.release.clear()
                await asyncio.sleep(0.002)

        releaser = asyncio.create_task(let_pages_go())
        try:
            results = await asyncio.gather(
                *(client(d, p, leave) for (d, p), leave in zip(documents, leaves_after, strict=True))
            )
        finally:
            releaser.cancel()
        # The pages of clients that left are read to their end in the pool, then let go.
        pool.release.set()
        for _ in range(10_000):
            if pool.in_pool == 0 and memory.held == 0:
                break
            await asyncio.sleep(0.002)
        assert max(uncovered) <= 0
        for (_, pixels), leave, seen in zip(documents, leaves_after, results, strict=True):
            expected = len(pixels) if leave is None else min(len(pixels), leave + 1)
            assert seen == list(range(1, expected + 1))
        # The pages really alive in the pool, counted by the pool itself, fit the budget.
        assert page_cost(pool.most_pixels_in_pool) <= limit
        assert memory.peak <= limit
        assert max(in_pool_bytes) <= limit
        assert memory.held == 0 and memory.waiting == 0
        assert pool.in_pool == 0
        # Every document's model pins are released exactly once, however its client left.
        assert [pin.released for pin in service.store.pins] == [1] * len(documents)  # type: ignore[attr-defined]
        service.close()

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool]) -> None:
    """Wait on the loop for what the pool does on its own time (a guard, not a timing)."""
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the condition never came true")


def test_a_client_that_hangs_up_again_and_again_gets_no_more_pages_decoded_than_the_budget() -> None:
    """The attack: send a large page, hang up once it is in a worker, repeat. The page is still
    in the worker (read to its end there), so its memory is not free for the next one."""
    page = Image.new("RGB", (120, 90), "white")
    limit = page_cost(page.width * page.height)

    async def scenario() -> None:
        pool = HeldPool(workers=4, ready=True)
        memory = PageMemory(limit)
        service = _service(pool, memory)
        run = await service.start(OcrInput(file=io.BytesIO(to_tiff([page]))))
        await _until(lambda: pool.in_pool == 1)
        await run.aclose()  # the client hangs up while its page is in a worker
        assert (pool.in_pool, memory.held) == (1, limit)
        # The next client's page waits: admitted, not decoded.
        starting = asyncio.create_task(service.start(OcrInput(file=io.BytesIO(to_tiff([page])))))
        await _until(lambda: memory.waiting == 1)
        assert not starting.done() and len(pool.entered) == 1
        pool.let_finish(1)  # the worker is done with the abandoned page: now the next one runs
        second = await starting
        assert len(pool.entered) == 2 and pool.abandoned_done == 1
        await second.aclose()
        pool.release.set()
        await _until(lambda: memory.held == 0 and pool.in_pool == 0)
        assert page_cost(pool.most_pixels_in_pool) <= limit and memory.peak <= limit
        service.close()

    asyncio.run(scenario())


def test_a_page_whose_client_leaves_while_it_is_decoded_keeps_its_memory_until_the_decoder_is_done() -> None:
    page = Image.new("RGB", (120, 90), "white")
    cost = page_cost(page.width * page.height)
    entered, gate = threading.Event(), threading.Event()
    decoded: list[Image.Image] = []

    class SlowToDecode(Document):
        def page(self, index: int) -> Image.Image:
            entered.set()
            assert gate.wait(30), "the test never opened the gate"
            decoded.append(super().page(index))
            return decoded[-1]

    async def scenario() -> None:
        pool = HeldPool(workers=1, ready=True)
        memory = PageMemory(10 * cost)
        service = _service(pool, memory)
        with patch("ocr_service.ocr.Document", SlowToDecode):
            starting = asyncio.create_task(service.start(OcrInput(file=io.BytesIO(to_tiff([page])))))
            await asyncio.to_thread(entered.wait, 30)
            starting.cancel()  # the client leaves while the documents thread decodes its page
            for _ in range(20):  # the page's own task is cancelled too (closing the document
                await asyncio.sleep(0)  # waits for the documents thread, so `starting` does)
            assert memory.held == cost  # the thread still builds the page
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await starting
            await _until(lambda: memory.held == 0)
        assert len(decoded) == 1 and pool.entered == []
        service.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(25))
def test_pages_of_clients_that_leave_at_random_moments_keep_their_memory_until_the_pool_lets_them_go(
    seed: int,
) -> None:
    """Many short documents whose clients leave at random moments (before the first page is
    decoded, while a page is in the pool, between pages) while the pool finishes and drops
    pages at random: the pages really alive (counted by the pool) never exceed the budget, and
    everything is given back in the end."""
    rng = random.Random(seed)
    documents = [_document(rng) for _ in range(10)]
    biggest = max(page_cost(p) for _, pixels in documents for p in pixels)
    limit = rng.randint(biggest, 2 * biggest)

    async def scenario() -> None:
        pool = HeldPool(workers=rng.randint(1, 4), ready=True)
        memory = PageMemory(limit)
        service = _service(pool, memory)

        async def client(data: bytes, wait_s: float) -> None:
            run = await service.start(OcrInput(file=io.BytesIO(data)))
            try:
                async with asyncio.timeout(wait_s):
                    async for _ in run.events():
                        pass
            except TimeoutError:
                pass  # the client hangs up
            finally:
                await run.aclose()

        async def let_pages_go() -> None:
            while True:
                if rng.random() < 0.3:
                    pool.let_finish(rng.randint(1, 2))
                await asyncio.sleep(rng.choice([0, 0.001, 0.003]))

        releaser = asyncio.create_task(let_pages_go())
        clients = []
        for data, _ in documents:
            clients.append(asyncio.create_task(client(data, rng.choice([0, 0.001, 0.005, 0.02, 1.0]))))
            await asyncio.sleep(rng.choice([0, 0.001, 0.004]))
        try:
            await asyncio.gather(*clients)
        finally:
            releaser.cancel()
        pool.release.set()
        await _until(lambda: memory.held == 0 and pool.in_pool == 0)
        assert page_cost(pool.most_pixels_in_pool) <= limit
        assert memory.peak <= limit and memory.waiting == 0
        assert pool.finished + pool.abandoned_done == len(pool.entered)
        assert [pin.released for pin in service.store.pins] == [1] * len(documents)  # type: ignore[attr-defined]
        service.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(30))
def test_the_pixels_reserved_for_a_page_are_never_fewer_than_it_decodes_to(seed: int) -> None:
    """PDF pages at random sizes and resolutions (some rendered down to the pixel limit) and
    image frames of random sizes: what is reserved before decoding covers the decoded page."""
    rng = random.Random(seed)
    limits = PageLimits(
        max_pages=10,
        max_page_pixels=rng.randint(20_000, 400_000),
        pdf_dpi=rng.choice([50, 72, 150]),
        max_aspect_ratio=100,
        max_segmentation_width=1_000_000,
        open_timeout_s=5,
    )
    sizes = [(rng.randint(10, 700), rng.randint(10, 700)) for _ in range(rng.randint(1, 4))]
    pages = [Image.new("RGB", size, "white") for size in sizes]
    if rng.random() < 0.5:
        data = to_pdf(pages, dpi=rng.choice([36, 72, 96]))
    else:
        fitting = [p for p in pages if p.width * p.height <= limits.max_page_pixels] or [Image.new("L", (10, 10))]
        data = to_tiff(fitting)
    document = Document(io.BytesIO(data), limits)
    try:
        document.check_all_pages()
        for index in range(document.page_count):
            reserved = document.page_pixels(index)
            page = document.page(index)
            assert page.width * page.height <= reserved <= limits.max_page_pixels
    finally:
        document.close()


# --- the page memory setting --------------------------------------------------------------------


def test_the_page_memory_is_by_default_what_the_service_budget_leaves_for_pages(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path, memory_limit_mb=8192)
    assert settings.page_memory_bytes == (SERVICE_BASE_MEMORY_MB - SERVICE_PROCESS_MEMORY_MB) * 1024 * 1024
    assert settings.service_memory_mb == SERVICE_BASE_MEMORY_MB


@pytest.mark.parametrize("seed", range(20))
def test_a_larger_page_memory_leaves_less_room_for_workers(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    page_mb = rng.randint(1, 6000)
    limit_mb = rng.randint(1000, 20000)
    settings = Settings(models_dir=tmp_path, memory_limit_mb=limit_mb, page_memory_mb=page_mb)
    service_mb = max(SERVICE_BASE_MEMORY_MB, SERVICE_PROCESS_MEMORY_MB + page_mb)
    assert settings.page_memory_bytes == page_mb * 1024 * 1024
    assert settings.service_memory_mb == service_mb
    # Beside the service: a model check (and trainers, with training on), one reserve for all.
    assert settings.reserved_memory_mb == service_mb + settings.model_check_memory_mb + settings.trainers_memory_mb
    fit = (limit_mb - settings.reserved_memory_mb) // settings.worker_memory_mb
    assert settings.worker_count == max(1, min(settings.effective_cpus, fit))
    explicit = Settings(models_dir=tmp_path, memory_limit_mb=limit_mb, page_memory_mb=page_mb, workers=1)
    if settings.reserved_memory_mb + settings.worker_memory_mb > limit_mb:
        with pytest.raises(ValueError, match="memory limit"):
            explicit.check_memory_budget()
    else:
        explicit.check_memory_budget()


def test_a_client_leaving_while_its_pdf_opens_gets_it_closed_on_the_documents_thread() -> None:
    """pdfium is not thread-safe: a document opened for a client that left must still be
    closed on the documents thread (not by the garbage collector on the event loop's)."""
    entered, gate = threading.Event(), threading.Event()
    opened: list[Document] = []
    closed_on: list[str] = []

    class SlowToOpen(Document):
        def __init__(self, *args: object, **kwargs: object) -> None:
            entered.set()
            gate.wait(30)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            opened.append(self)

        def close(self) -> None:
            closed_on.append(threading.current_thread().name)
            super().close()

    async def scenario() -> None:
        service = _service(HeldPool(workers=1, ready=True), PageMemory(10**9))
        source = io.BytesIO(to_pdf([Image.new("L", (40, 40))] * 2))
        with patch("ocr_service.ocr.Document", SlowToOpen):
            starting = asyncio.create_task(service.start(OcrInput(file=source)))
            await asyncio.to_thread(entered.wait, 30)
            starting.cancel()
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await starting
        assert len(opened) == 1 and closed_on and closed_on[0].startswith("documents")
        assert [pin.released for pin in service.store.pins] == [1]  # type: ignore[attr-defined]
        service.close()

    asyncio.run(scenario())
