"""Documents pin the files of their models: whatever happens to the store while a document is
read, every later page gets the bytes (and the version) the document started with.

Store level, no kraken: a "page" here is what a worker does with a reference, i.e. open the
pinned path and check that its stamp is the one the reference names (the engine's loader
refuses any other file; see test_engine.py). Interleavings are generated from seeds.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from ocr_service.admission import Admission, PageMemory
from ocr_service.documents import PageLimits
from ocr_service.errors import AppError, ErrorCode
from ocr_service.fetch import DocumentFetcher, FetchPolicy
from ocr_service.model_pins import ModelPin, PinnedFileChangedError, pin_off_loop
from ocr_service.model_ref import ModelFacts, ModelRef, file_stamp, packaged_segmentation_model
from ocr_service.ocr import OcrInput, OcrService
from ocr_service.store import ModelStore
from tests.support.held_pool import HeldPool
from tests.support.synthetic import to_png

RECOGNITION = ModelFacts(kind="recognition", line_type="bbox", alphabet="abc", input_height=32)
SEGMENTATION = ModelFacts(kind="segmentation", line_type=None, alphabet=None, input_height=1800)
SUFFIXES = (".safetensors", ".mlmodel")


@dataclass
class Started:
    """A document as it started: its pin, and the bytes and versions its models had then."""

    pin: ModelPin
    model_bytes: bytes | None
    segmentation_bytes: bytes
    model_version: int | None
    segmentation_version: int


class Scenario:
    def __init__(self, root: Path, rng: random.Random) -> None:
        self.rng = rng
        self.outside = root / "outside"
        self.outside.mkdir(parents=True)
        self.store = ModelStore(root / "models")
        self.counter = 0
        for name, facts in (("reader", RECOGNITION), ("seg-a", SEGMENTATION), ("seg-b", SEGMENTATION)):
            self.install(name, facts)
        self.store.set_segmentation("seg-a")

    def new_file(self) -> Path:
        self.counter += 1
        path = self.outside / f"v{self.counter}{self.rng.choice(SUFFIXES)}"
        path.write_bytes(f"model bytes {self.counter} ".encode() * self.rng.randint(1, 50))
        return path

    def install(self, name: str, facts: ModelFacts) -> None:
        self.store.install(self.new_file(), name, facts, source="uploaded", replace=True)

    def start(self) -> Started:
        pin = self.store.pin_models("reader" if self.store.file_of("reader") else None)
        current_model = self.store.file_of("reader")
        seg = self.store.segmentation_model()
        assert pin.segmentation_model.name == seg.name
        return Started(
            pin=pin,
            model_bytes=current_model.read_bytes() if current_model else None,
            segmentation_bytes=Path(seg.path).read_bytes(),
            model_version=self.store.entry("reader").version if current_model else None,
            segmentation_version=seg.version,
        )

    def change(self) -> str:
        store, rng = self.store, self.rng
        op = rng.choice(["replace", "remove", "hand", "switch", "replace-seg", "remove-seg"])
        if op == "replace" or (op == "remove" and store.file_of("reader") is None):
            self.install("reader", RECOGNITION)
        elif op == "remove":
            store.remove("reader")
        elif op == "hand":
            # an operator's `mv new.safetensors models/reader.safetensors`
            current = store.file_of("reader")
            target = current if current is not None else store.root / "reader.safetensors"
            os.replace(self.new_file(), target)
        elif op == "switch":
            present = [n for n in ("seg-a", "seg-b") if store.file_of(n) is not None]
            store.set_segmentation(rng.choice([*present, "blla", None]))
        elif op == "replace-seg":
            self.install(rng.choice(["seg-a", "seg-b"]), SEGMENTATION)
        else:
            spare = next((n for n in ("seg-a", "seg-b") if n != store.chosen_segmentation), None)
            if spare is not None and store.file_of(spare) is not None:
                store.remove(spare)
            else:
                self.install("seg-b", SEGMENTATION)
        return op


def read_page(ref: ModelRef) -> bytes:
    """What a worker loads for ``ref``: exactly the file the stamp names, or nothing."""
    assert file_stamp(ref.path) == ref.stamp
    return Path(ref.path).read_bytes()


def check_page(document: Started) -> None:
    pin = document.pin
    if document.model_bytes is None:
        assert pin.model is None
    else:
        assert pin.model is not None
        assert read_page(pin.model) == document.model_bytes
        assert pin.model.version == document.model_version
    assert read_page(pin.segmentation_model) == document.segmentation_bytes
    assert pin.segmentation_model.version == document.segmentation_version


def pinned_files(store: ModelStore) -> list[Path]:
    return [p for p in (store.root / ".pins").rglob("*") if p.is_file() and p.name != ".owner"]


@pytest.mark.parametrize("seed", range(100))
def test_every_page_reads_the_files_its_document_pinned_whatever_changes_meanwhile(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    scenario = Scenario(tmp_path, rng)
    documents: list[tuple[Started, int]] = []  # a document and the pages it has left
    for _ in range(rng.randint(4, 12)):
        if not documents or rng.random() < 0.4:
            documents.append((scenario.start(), rng.randint(2, 6)))
        scenario.change()
        still_reading = []
        for document, pages_left in documents:
            check_page(document)
            if pages_left > 1:
                still_reading.append((document, pages_left - 1))
            else:
                document.pin.release()
        documents = still_reading
    for document, _ in documents:
        check_page(document)
        document.pin.release()
    # Every pin was let go: no link keeps a removed or replaced version's bytes.
    assert pinned_files(scenario.store) == []
    assert scenario.store.pins.held() == {}


def test_documents_of_one_version_share_one_pin_until_the_last_ends(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, random.Random(0))
    first, second = scenario.start(), scenario.start()
    assert first.pin.model is not None and second.pin.model is not None
    assert first.pin.model.path == second.pin.model.path
    scenario.store.remove("reader")
    first.pin.release()
    first.pin.release()  # releasing twice changes nothing
    check_page(second)
    second.pin.release()
    assert pinned_files(scenario.store) == []


def test_the_packaged_segmentation_model_is_read_in_place(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    pin = store.pin_models(None)
    assert (pin.model, pin.segmentation_model.name) == (None, "blla")
    assert pin.segmentation_model.path == str(packaged_segmentation_model())
    pin.release()


def test_a_file_changed_between_resolving_and_pinning_is_not_pinned_under_the_old_stamp(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, random.Random(1))
    ref = scenario.store.recognition_model("reader")
    assert ref is not None
    outdated = ModelRef(ref.name, ref.path, (ref.stamp[0] - 1, ref.stamp[1]), ref.version)
    with pytest.raises(PinnedFileChangedError):
        scenario.store.pins.hold(outdated)
    assert pinned_files(scenario.store) == []


def test_an_unknown_model_is_refused_before_anything_is_pinned(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(AppError) as refused:
        store.pin_models("nobody")
    assert refused.value.code == ErrorCode.UNKNOWN_MODEL
    assert not (store.root / ".pins").exists()


PIN_AND_DIE = """
import os, sys
from pathlib import Path
from ocr_service.store import ModelStore
store = ModelStore(Path(sys.argv[1]))
pin = store.pin_models("reader")
print(pin.model.path, flush=True)
os._exit(0)
"""


def test_pins_of_a_process_that_died_are_swept_and_a_living_ones_are_kept(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, random.Random(2))
    living = scenario.start()
    died = subprocess.run(
        [sys.executable, "-c", PIN_AND_DIE, str(scenario.store.root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    left_behind = Path(died.stdout.strip())
    assert left_behind.is_file()
    ModelStore(scenario.store.root)  # the next store to open sweeps
    assert not left_behind.parent.exists()
    check_page(living)
    living.pin.release()


def test_a_segmentation_model_on_another_file_system_is_pinned_as_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from ocr_service import model_pins

    configured = tmp_path / "elsewhere" / "house.mlmodel"
    configured.parent.mkdir()
    configured.write_bytes(b"the house segmentation model, version 1")
    store = ModelStore(tmp_path / "models", segmentation_model=configured)

    def no_links_across_devices(source: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(model_pins.os, "link", no_links_across_devices)
    pin = store.pin_models(None)
    assert pin.segmentation_model.name == "house"
    assert Path(pin.segmentation_model.path) != configured
    tmp = configured.with_name("new.mlmodel")
    tmp.write_bytes(b"the house segmentation model, version 2 (longer)")
    os.replace(tmp, configured)
    assert read_page(pin.segmentation_model) == b"the house segmentation model, version 1"
    pin.release()
    assert pinned_files(store) == []


def test_a_file_removed_between_resolving_and_pinning_is_resolved_again_not_a_500(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, random.Random(2))
    ref = scenario.store.recognition_model("reader")
    assert ref is not None
    gone = ModelRef(ref.name, str(Path(ref.path).with_name("gone.safetensors")), ref.stamp, ref.version)
    with pytest.raises(PinnedFileChangedError):
        scenario.store.pins.hold(gone)
    assert pinned_files(scenario.store) == []


@pytest.mark.parametrize("failure", [PinnedFileChangedError("changed"), OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_segmentation_pin_drops_the_recognition_pin_taken_before_it(
    tmp_path: Path, failure: BaseException
) -> None:
    scenario = Scenario(tmp_path, random.Random(3))
    pins = scenario.store.pins
    hold = pins.hold

    def failing_on_segmentation(ref: ModelRef) -> ModelRef:
        if ref.name != "reader":
            raise failure
        return hold(ref)

    pins.hold = failing_on_segmentation  # type: ignore[method-assign]
    with pytest.raises((AppError, type(failure))):
        scenario.store.pin_models("reader")
    assert pins.held() == {}
    assert pinned_files(scenario.store) == []


# --- pins are taken off the event loop -----------------------------------------------------------


class SlowPins:
    """Makes the store's ``hold`` wait at a gate on its ``stop``-th call (1: the recognition
    model, 2: the segmentation model), as a slow disk or a copy across file systems would."""

    def __init__(self, store: ModelStore, stop: int) -> None:
        self.entered, self.gate = threading.Event(), threading.Event()
        self.calls = 0
        hold = store.pins.hold

        def slow_hold(ref: ModelRef) -> ModelRef:
            self.calls += 1
            if self.calls == stop:
                self.entered.set()
                assert self.gate.wait(60), "the test never opened the gate"
            return hold(ref)

        store.pins.hold = slow_hold  # type: ignore[method-assign]


def _service(store: ModelStore) -> OcrService:
    return OcrService(
        limits=PageLimits(
            max_pages=5,
            max_page_pixels=1_000_000,
            pdf_dpi=72,
            max_aspect_ratio=10,
            max_segmentation_width=3700,
            open_timeout_s=5,
        ),
        store=store,
        pool=HeldPool(workers=1, ready=True),  # type: ignore[arg-type]
        fetcher=DocumentFetcher(FetchPolicy(frozenset(), False, 1, 1.0, 0)),
        admission=Admission(5, 1),
        memory=PageMemory(10**9),
    )


@pytest.mark.parametrize("seed", range(12))
def test_a_document_cancelled_while_its_models_are_pinned_leaves_no_pin(tmp_path: Path, seed: int) -> None:
    """The client leaves while the recognition or the segmentation model is being pinned (on
    its thread), or in the very moment the pin is taken: once the thread is done, nothing is
    pinned and no link is left; and the event loop ran on meanwhile."""
    rng = random.Random(seed)
    scenario = Scenario(tmp_path, rng)
    slow = SlowPins(scenario.store, stop=rng.choice([1, 2]))
    service = _service(scenario.store)
    data = to_png(Image.new("L", (40, 30), 255))

    async def main() -> int:
        starting = asyncio.create_task(service.start(OcrInput(file=io.BytesIO(data), model="reader")))
        ticks = 0
        while not slow.entered.is_set():  # the loop is free while the pin waits at its gate
            ticks += 1
            await asyncio.sleep(0.001)
        if rng.random() < 0.5:
            slow.gate.set()  # the pin may be taken in the same moment as the client leaves
            await asyncio.sleep(rng.choice([0, 0.001]))
        starting.cancel()
        for _ in range(10):
            ticks += 1
            await asyncio.sleep(0)
        slow.gate.set()
        try:
            run = await starting
        except asyncio.CancelledError:
            pass
        else:  # the pin was taken and the document started before the cancel arrived
            await run.aclose()
        # Both models pinned (the second hold has begun), then let go again.
        for _ in range(5000):
            if slow.calls == 2 and scenario.store.pins.held() == {}:
                break
            await asyncio.sleep(0.002)
        return ticks

    assert asyncio.run(main()) > 0
    assert scenario.store.pins.held() == {}
    assert pinned_files(scenario.store) == []
    service.close()


def test_a_pin_taken_after_its_caller_left_is_released_and_a_failed_one_reports_nothing(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, random.Random(4))
    slow = SlowPins(scenario.store, stop=2)

    async def main() -> None:
        taking = asyncio.create_task(pin_off_loop(scenario.store.pin_models, "reader"))
        await asyncio.to_thread(slow.entered.wait, 60)
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        held_meanwhile = scenario.store.pins.held()
        slow.gate.set()
        assert list(held_meanwhile.values()) == [1]  # the thread had pinned the recognition model
        for _ in range(5000):
            if slow.calls == 2 and scenario.store.pins.held() == {}:
                break
            await asyncio.sleep(0.002)
        # An unknown model fails in the thread: the caller that left gets no error, nothing is pinned.
        failing = asyncio.create_task(pin_off_loop(scenario.store.pin_models, "nobody"))
        await asyncio.sleep(0)
        failing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await failing
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert scenario.store.pins.held() == {}
    assert pinned_files(scenario.store) == []
