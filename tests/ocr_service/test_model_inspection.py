"""Files placed in the store by hand are inspected in the background: once each, one at a time,
never on demand by a (possibly unauthenticated) listing."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from ocr_service.model_inspection import LocalModelInspector, ModelChecker
from ocr_service.model_ref import ModelFacts, ModelFileError
from ocr_service.models_admin import ModelAdmin
from ocr_service.store import ModelStore

RECOGNITION = ModelFacts(kind="recognition", line_type="bbox", alphabet="abc", input_height=32)


class GatedLoader:
    """Stands in for the child-process loader: counts who it inspects, how many at once, and
    holds every inspection until the test opens the gate."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.gate = threading.Event()
        self.seen: dict[str, int] = {}
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> ModelFacts:
        with self._lock:
            self.seen[path.stem] = self.seen.get(path.stem, 0) + 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.gate.wait(timeout=60), "the test never opened the gate"
            if path.stem in self.refuse:
                raise ModelFileError("not a model")
            return RECOGNITION
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("seed", range(8))
def test_concurrent_listings_start_one_inspection_at_a_time_and_each_file_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = ModelStore(tmp_path / "models")
    names = [f"hand-{i}" for i in range(rng.randint(2, 8))]
    for name in names:
        (store.root / f"{name}{rng.choice(['.safetensors', '.mlmodel'])}").write_bytes(rng.randbytes(64))
    loader = GatedLoader(refuse=set(rng.sample(names, rng.randint(0, len(names)))))
    admin = ModelAdmin(store, max_bytes=10_000, validate=loader)
    store.watch_unchecked(admin.inspector.notice)

    listings: list[list[dict[str, object]]] = []
    listing_lock = threading.Lock()

    def list_models() -> None:
        for _ in range(rng.randint(5, 15)):
            entries = admin.entries()
            with listing_lock:
                listings.append(entries)

    threads = [threading.Thread(target=list_models) for _ in range(rng.randint(8, 24))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Every listing came back while the inspections were held: none waited for one.
    assert all(not t.is_alive() for t in threads)
    for entries in listings:
        hand = [e for e in entries if e["name"] in names]
        assert [(e["checking"], e["kind"]) for e in hand] == [(True, None)] * len(names)

    loader.gate.set()
    admin.inspector.wait_idle()
    assert loader.seen == dict.fromkeys(names, 1)
    assert loader.most_at_once == 1
    after = {e["name"]: e for e in admin.entries() if e["name"] in names}
    for name in names:
        refused = name in loader.refuse
        assert after[name]["checking"] is False
        assert (after[name]["kind"], after[name]["problem"]) == (
            (None, "not a model") if refused else ("recognition", None)
        )
    admin.entries()
    admin.inspector.wait_idle()
    assert loader.seen == dict.fromkeys(names, 1)  # described files are not inspected again
    admin.inspector.close()


def test_a_file_replaced_by_hand_is_inspected_again_as_a_new_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    loader = GatedLoader(refuse=set())
    inspector = LocalModelInspector(store, ModelChecker(loader))
    store.watch_unchecked(inspector.notice)
    (store.root / "hand.safetensors").write_bytes(b"first")
    assert (store.entry("hand").checking, store.entry("hand").version) == (True, 1)
    loader.gate.set()
    inspector.wait_idle()
    first = store.entry("hand")
    assert (first.checking, first.kind, first.version) == (False, "recognition", 1)
    loader.gate.clear()
    (store.root / "hand.safetensors").write_bytes(b"second version")
    assert (store.entry("hand").checking, store.entry("hand").version) == (True, 2)
    loader.gate.set()
    inspector.wait_idle()
    assert (store.entry("hand").kind, store.entry("hand").version, loader.seen["hand"]) == ("recognition", 2, 2)
    inspector.close()


def test_an_admin_choice_inspects_an_unchecked_file_first(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    loader = GatedLoader(refuse=set())
    loader.gate.set()
    admin = ModelAdmin(store, max_bytes=10_000, validate=loader)
    (store.root / "hand.mlmodel").write_bytes(b"a recognition model")
    assert admin.set_default("hand") == {"name": "hand"}
    assert loader.seen == {"hand": 1}
