"""The rules about models live in one place: the store, the admin (HTTP and command line) and
training judge every name and kind the same way. Generated names and kinds, seeded."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import ModelFacts
from ocr_service.models_admin import InstallRequest, ModelAdmin
from ocr_service.settings import MODEL_NAME_PATTERN
from ocr_service.store import ModelStore
from ocr_service.training.requests import TrainingRequest, check_training_request
from tests.conftest import make_settings
from tests.ocr_service.test_models_store import FakeLoader, safetensors_bytes

KINDS = {
    "recognition": ModelFacts(kind="recognition", line_type="bbox", alphabet="abc", input_height=32),
    "segmentation": ModelFacts(kind="segmentation", line_type=None, alphabet=None, input_height=1800),
}


def random_name(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.1:
        return "blla"
    if pick < 0.5:  # mostly valid: lowercase, digits, inner dashes
        body = "".join(rng.choice(string.ascii_lowercase + string.digits + "-") for _ in range(rng.randint(1, 70)))
        return body.strip("-") or "x"
    alphabet = string.ascii_letters + string.digits + "-_./ \\äß\x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))


def outcome(call: Callable[..., object], *args: Any, **kwargs: Any) -> ErrorCode | None:
    try:
        call(*args, **kwargs)
    except AppError as exc:
        return exc.code
    return None


def expected(name: str) -> ErrorCode | None:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        return ErrorCode.INVALID_MODEL_NAME
    if name == "blla":
        return ErrorCode.MODEL_PROTECTED
    return None


@pytest.mark.parametrize("seed", range(4))
def test_store_admin_and_training_judge_every_name_alike(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    settings = make_settings(tmp_path / "models", training_dir=tmp_path / "training")
    store = ModelStore(settings.models_dir)
    admin = ModelAdmin(store, max_bytes=10_000, validate=FakeLoader(KINDS["recognition"]))
    source = tmp_path / "model.safetensors"
    source.write_bytes(safetensors_bytes())
    for _ in range(75):
        name = rng.choice([random_name(rng), *store.names()])
        want = expected(name)
        got = (
            outcome(store.install, source, name, KINDS["recognition"], source="uploaded", replace=True),
            outcome(admin.install_file, source, InstallRequest(name=name, replace=True)),
            outcome(check_training_request, TrainingRequest("recognition", name), settings, store),
        )
        assert got == (want, want, want), name


@pytest.mark.parametrize("seed", range(4))
def test_a_kind_is_kept_alike_by_the_store_admin_and_training(tmp_path: Path, seed: int) -> None:
    """A new version of the default (or the segmentation model) keeps its kind; training under a
    name makes a new version of it, so it keeps that name's kind too."""
    rng = random.Random(seed)
    settings = make_settings(tmp_path / "models", training_dir=tmp_path / "training")
    store = ModelStore(settings.models_dir)
    loaders = {kind: FakeLoader(facts) for kind, facts in KINDS.items()}
    admins = {kind: ModelAdmin(store, max_bytes=10_000, validate=loader) for kind, loader in loaders.items()}
    source = tmp_path / "model.safetensors"
    source.write_bytes(safetensors_bytes())
    admins["recognition"].install_file(source, InstallRequest(name="reader"))
    admins["segmentation"].install_file(source, InstallRequest(name="cutter"))
    store.set_default("reader")
    store.set_segmentation("cutter")
    for _ in range(40):
        name, kind = rng.choice(["reader", "cutter"]), rng.choice(list(KINDS))
        current = store.entry(name).kind
        want = None if kind == current else ErrorCode.WRONG_MODEL_KIND
        got = (
            outcome(store.install, source, name, KINDS[kind], source="uploaded", replace=True),
            outcome(admins[kind].install_file, source, InstallRequest(name=name, replace=True)),
            outcome(check_training_request, TrainingRequest(kind, name), settings, store),  # type: ignore[arg-type]
        )
        assert got == (want, want, want), (name, kind)
        assert store.entry(name).kind == current
