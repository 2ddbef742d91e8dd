"""/models over real HTTP with real kraken: upload, list, choose the default, replace, remove,
and what the next /ocr reads with — one service for the module (each start loads kraken twice).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from collections.abc import Iterator
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocr_service.app import create_app
from ocr_service.cli import main as models_cli
from ocr_service.engine.pipeline import packaged_segmentation_model
from tests.conftest import make_settings
from tests.ocr_service.test_models_cli import converted_to_coreml
from tests.ocr_service.test_ocr_api import letter
from tests.support.segmentation_models import blind_copy, packaged_as_safetensors
from tests.support.servers import RunningApp, start_app
from tests.support.synthetic import page_texts, render_page, to_png, to_tiff

TOKEN = "models-test-token"
AUTH = {"X-Training-Token": TOKEN}
# The packaged segmentation model (about 5 MB) must fit; a little more must not.
MAX_MODEL_BYTES = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    # One worker: every page runs on the same number of torch threads whether it runs alone or
    # beside another, so a page segmented twice gives the same lines (with two workers a lone page
    # borrows the idle one's cores, and torch sums in another order on another number of threads).
    settings = make_settings(
        tmp_path_factory.mktemp("models-api"), training_token=TOKEN, max_model_bytes=MAX_MODEL_BYTES, workers=1
    )
    running = start_app(create_app(settings))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def store_dir(service: RunningApp) -> Path:
    path: Path = service.app.state.services.settings.models_dir
    return path


@pytest.fixture(scope="module")
def client(service: RunningApp) -> Iterator[httpx.Client]:
    with service.client() as http:
        yield http


def swapped_codec(model: Path, target: Path, a: str = "a", b: str = "e") -> Path:
    """The same weights with two letters' labels swapped: it reads ``a`` where the original reads ``e``."""
    data = model.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["kraken_meta"])
    for model_meta in meta.values():
        codec = model_meta["codec"]
        codec[a], codec[b] = codec[b], codec[a]
    header["__metadata__"]["kraken_meta"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + header_len :])
    return target


def upload(
    client: httpx.Client,
    data: bytes,
    name: str,
    *,
    filename: str = "model.safetensors",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    return client.post(
        "/models",
        files={"file": (filename, data, "application/octet-stream")},
        data={"name": name, **fields},
        headers=AUTH if headers is None else headers,
    )


def store_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".store.lock"}


def model_names(client: httpx.Client) -> list[str]:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    return [m["name"] for m in response.json()["models"]]


def ocr_rows(client: httpx.Client, png: bytes, model: str | None = None) -> tuple[str | None, list[str]]:
    data = {"model": model} if model else {}
    response = client.post("/ocr", files={"file": ("page.png", png, "image/png")}, data=data)
    assert response.status_code == 200, response.text
    body = response.json()
    lines = sorted(body["pages"][0]["lines"], key=lambda ln: (ln["baseline"][0][1], ln["baseline"][0][0]))
    return body["model"], [ln["text"] for ln in lines]


def test_an_uploaded_model_is_installed_listed_and_described(
    client: httpx.Client, store_dir: Path, tiny_model: Path
) -> None:
    # the client's file name says CoreML; the bytes say safetensors, and the bytes win
    response = upload(client, tiny_model.read_bytes(), "tiny-upload", filename="../../evil.mlmodel")
    assert response.status_code == 201, response.text
    described = response.json()
    assert described["name"] == "tiny-upload"
    assert described["kind"] == "recognition"
    assert described["lineType"] == "bbox"
    assert described["source"] == "uploaded"
    assert described["version"] == 1
    assert described["alphabetSize"] == 38
    assert described["inputHeight"] == 32
    assert described["size"] == tiny_model.stat().st_size
    assert (store_dir / "tiny-upload.safetensors").read_bytes() == tiny_model.read_bytes()
    assert not list(store_dir.rglob("evil*"))
    assert not list((store_dir / ".staging").iterdir())

    listing = client.get("/models").json()
    by_name = {m["name"]: m for m in listing["models"]}
    assert by_name["tiny-upload"] == described
    assert by_name["blla"]["kind"] == "segmentation"
    assert by_name["blla"]["source"] == "packaged"
    assert client.get("/models/tiny-upload").json() == described
    missing = client.get("/models/nothing-here")
    assert (missing.status_code, missing.json()["code"]) == (404, "MODEL_NOT_FOUND")


def test_a_segmentation_model_is_installed_but_cannot_be_the_default(client: httpx.Client) -> None:
    response = upload(client, packaged_segmentation_model().read_bytes(), "my-segmenter", filename="x.mlmodel")
    assert response.status_code == 201, response.text
    assert (response.json()["kind"], response.json()["lineType"]) == ("segmentation", None)
    refused = client.put("/models/default", json={"name": "my-segmenter"}, headers=AUTH)
    assert (refused.status_code, refused.json()["code"]) == (422, "WRONG_MODEL_KIND")
    unknown = client.put("/models/default", json={"name": "nothing-here"}, headers=AUTH)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "MODEL_NOT_FOUND")
    assert client.get("/models").json()["default"] is None


def _torch_checkpoint() -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(4)}}, buffer)
    return buffer.getvalue()


REFUSALS: list[Any] = [
    # (data, name, filename, extra fields, headers, status, code)
    (b"garbage " * 64, "garbage", "model.mlmodel", {}, None, 422, "INVALID_MODEL"),
    (pickle.dumps({"w": [0.0] * 64}, protocol=4), "pickled", "model.safetensors", {}, None, 422, "INVALID_MODEL"),
    (_torch_checkpoint, "checkpoint", "model.ckpt", {}, None, 422, "INVALID_MODEL"),
    (b"", "empty", "model.mlmodel", {}, None, 422, "INVALID_MODEL"),
    (b"\x00" * (MAX_MODEL_BYTES + 1), "oversized", "model.mlmodel", {}, None, 413, "MODEL_TOO_LARGE"),
    (b"\x00" * (MAX_MODEL_BYTES + 512 * 1024), "way-oversized", "m.mlmodel", {}, None, 413, "REQUEST_TOO_LARGE"),
    (b"\x08\x04", "../escape", "m.mlmodel", {}, None, 422, "INVALID_MODEL_NAME"),
    (b"\x08\x04", "a/b", "m.mlmodel", {}, None, 422, "INVALID_MODEL_NAME"),
    (b"\x08\x04", "blla", "m.mlmodel", {}, None, 409, "MODEL_PROTECTED"),
    (b"\x08\x04", "wrong-token", "m.mlmodel", {}, {"X-Training-Token": "guess"}, 401, "UNAUTHORIZED"),
    (b"\x08\x04", "no-token", "m.mlmodel", {}, {}, 401, "UNAUTHORIZED"),
    (b"\x08\x04", "bad-flag", "m.mlmodel", {"replace": "maybe"}, None, 422, "INVALID_REQUEST"),
]


@pytest.mark.parametrize(
    ("data", "name", "filename", "fields", "headers", "status", "code"),
    REFUSALS,
    ids=[
        "garbage-mlmodel",
        "pickle-as-safetensors",
        "torch-ckpt",
        "empty",
        "oversized",
        "way-oversized",
        "dotdot-name",
        "slash-name",
        "packaged-name",
        "wrong-token",
        "missing-token",
        "bad-flag",
    ],
)
def test_a_refused_upload_installs_nothing_and_leaves_the_store_as_it_was(
    client: httpx.Client,
    store_dir: Path,
    data: Any,
    name: str,
    filename: str,
    fields: dict[str, str],
    headers: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    payload = data() if callable(data) else data
    before = store_files(store_dir)
    names_before = model_names(client)
    response = upload(client, payload, name, filename=filename, headers=headers, **fields)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.json()["message"]
    assert store_files(store_dir) == before
    assert model_names(client) == names_before


def test_the_packaged_model_cannot_be_removed_and_changes_need_the_token(client: httpx.Client) -> None:
    protected = client.delete("/models/blla", headers=AUTH)
    assert (protected.status_code, protected.json()["code"]) == (409, "MODEL_PROTECTED")
    for response in (
        client.delete("/models/tiny-upload"),
        client.put("/models/default", json={"name": "tiny-upload"}, headers={"X-Training-Token": "nope"}),
    ):
        assert (response.status_code, response.json()["code"]) == (401, "UNAUTHORIZED")
    assert "tiny-upload" in model_names(client)
    missing = client.delete("/models/nothing-here", headers=AUTH)
    assert (missing.status_code, missing.json()["code"]) == (404, "MODEL_NOT_FOUND")


def test_a_model_file_dropped_into_the_store_is_described_and_cached(
    service: RunningApp, client: httpx.Client, store_dir: Path, tiny_model: Path
) -> None:
    shutil.copyfile(tiny_model, store_dir / "dropped.safetensors")
    # Listing never loads a model: it queues the file for the background inspection.
    assert "dropped" in model_names(client)
    service.app.state.model_admin.inspector.wait_idle()
    described = client.get("/models/dropped").json()
    assert described["checking"] is False
    assert (described["source"], described["kind"], described["lineType"]) == ("local", "recognition", "bbox")
    meta = json.loads((store_dir / ".meta" / "dropped.json").read_text())
    assert meta["fileMtimeNs"] == (store_dir / "dropped.safetensors").stat().st_mtime_ns
    assert meta["kind"] == "recognition"


def test_install_default_replace_and_remove_change_what_the_next_ocr_reads_with(
    service: RunningApp, client: httpx.Client, store_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    page = letter(3)
    texts = [line.text for line in page.lines]
    png = to_png(page.image)

    # The operator installs the CoreML copy of the tiny model with the CLI while the service
    # runs; the admin uploads the safetensors original. Both hold the same weights.
    settings = service.app.state.services.settings
    coreml = converted_to_coreml(tiny_model)
    assert models_cli(["install", str(coreml), "--name", "kurrent-cli"], settings=settings) == 0
    from_cli = client.get("/models/kurrent-cli").json()
    assert (from_cli["kind"], from_cli["lineType"], from_cli["source"]) == ("recognition", "bbox", "uploaded")
    installed = upload(client, tiny_model.read_bytes(), "kurrent")
    assert installed.status_code == 201, installed.text
    model, first = ocr_rows(client, png, "kurrent-cli")
    assert model == "kurrent-cli"
    read = " ".join(first)
    assert SequenceMatcher(None, read, " ".join(texts)).ratio() > 0.8, (read, texts)
    assert sum(read.count(c) for c in "ae") > 3, read  # the page holds letters the swap below changes

    chosen = client.put("/models/default", json={"name": "kurrent"}, headers=AUTH)
    assert (chosen.status_code, chosen.json()) == (200, {"name": "kurrent"})
    assert client.get("/models/kurrent").json()["default"] is True

    # a new version under the same name: only with replace=true, and the old one is kept
    swapped = swapped_codec(tiny_model, tmp_path / "swapped.safetensors")
    before = store_files(store_dir)
    exists = upload(client, swapped.read_bytes(), "kurrent")
    assert (exists.status_code, exists.json()["code"]) == (409, "MODEL_EXISTS")
    assert store_files(store_dir) == before
    replaced = upload(client, swapped.read_bytes(), "kurrent", replace="true")
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["version"] == 2
    [backup] = (store_dir / ".backups" / "kurrent").glob("v1-*.safetensors")
    assert backup.read_bytes() == tiny_model.read_bytes()
    # ...and the workers read with the new version at once, without a restart
    model, second = ocr_rows(client, png)  # no model named: the default
    assert model == "kurrent"
    assert second == [line.translate(str.maketrans("ae", "ea")) for line in first]

    refused = client.delete("/models/kurrent", headers=AUTH)
    assert (refused.status_code, refused.json()["code"]) == (409, "MODEL_IS_DEFAULT")
    assert client.put("/models/default", json={"name": None}, headers=AUTH).json() == {"name": None}
    removed = client.delete("/models/kurrent", headers=AUTH)
    assert removed.status_code == 204, removed.text
    assert "kurrent" not in model_names(client)
    assert not (store_dir / "kurrent.safetensors").exists()
    gone = client.post("/ocr", files={"file": ("page.png", png, "image/png")}, data={"model": "kurrent"})
    assert (gone.status_code, gone.json()["code"]) == (422, "UNKNOWN_MODEL")


def ocr_line_count(client: httpx.Client, png: bytes, segmentation_model: str) -> int:
    response = client.post("/ocr", files={"file": ("page.png", png, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["segmentationModel"] == segmentation_model
    return len(response.json()["pages"][0]["lines"])


def test_the_chosen_segmentation_model_is_used_by_the_next_ocr_without_a_restart(
    client: httpx.Client, store_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    png = to_png(letter(3).image)
    blla = packaged_as_safetensors(tmp_path / "blla.safetensors")
    blind = blind_copy(blla, tmp_path / "blind.safetensors")
    installed = upload(client, blind.read_bytes(), "seg-blind")
    assert installed.status_code == 201, installed.text
    assert (installed.json()["kind"], installed.json()["segmentation"]) == ("segmentation", False)
    assert upload(client, tiny_model.read_bytes(), "seg-test-reader").status_code == 201

    # only an admin, only a segmentation model, only a model that exists
    no_token = client.put("/models/segmentation", json={"name": "seg-blind"})
    assert (no_token.status_code, no_token.json()["code"]) == (401, "UNAUTHORIZED")
    for name, status, code in (
        ("seg-test-reader", 422, "WRONG_MODEL_KIND"),
        ("nothing-here", 404, "MODEL_NOT_FOUND"),
        ("../seg-blind", 404, "MODEL_NOT_FOUND"),
    ):
        refused = client.put("/models/segmentation", json={"name": name}, headers=AUTH)
        assert (refused.status_code, refused.json()["code"]) == (status, code), name
    assert client.get("/health").json()["segmentationModel"] == "blla"

    lines_with_blla = ocr_line_count(client, png, "blla")
    assert lines_with_blla >= 3

    chosen = client.put("/models/segmentation", json={"name": "seg-blind"}, headers=AUTH)
    assert (chosen.status_code, chosen.json()) == (200, {"name": "seg-blind", "chosen": "seg-blind"})
    listing = client.get("/models").json()
    assert listing["segmentationModel"] == "seg-blind"
    assert [m["name"] for m in listing["models"] if m["segmentation"]] == ["seg-blind"]
    assert client.get("/health").json()["segmentationModel"] == "seg-blind"
    assert ocr_line_count(client, png, "seg-blind") == 0  # the workers cut lines with the chosen model

    in_use = client.delete("/models/seg-blind", headers=AUTH)
    assert (in_use.status_code, in_use.json()["code"]) == (409, "MODEL_IS_DEFAULT")
    # retrained (here: replaced) under the same name: the next page uses the new version
    replaced = upload(client, blla.read_bytes(), "seg-blind", replace="true")
    assert replaced.status_code == 201, replaced.text
    assert (replaced.json()["version"], replaced.json()["segmentation"]) == (2, True)
    assert ocr_line_count(client, png, "seg-blind") == lines_with_blla

    # a file replaced by hand with something that is no segmentation model: a clear error, no garbage
    shutil.copyfile(tiny_model, store_dir / "seg-blind.safetensors")
    broken = client.post("/ocr", files={"file": ("page.png", png, "image/png")})
    assert (broken.status_code, broken.json()["code"]) == (503, "SEGMENTATION_MODEL_UNUSABLE")
    assert "seg-blind" in broken.json()["message"] and "PUT /models/segmentation" in broken.json()["message"]

    reset = client.put("/models/segmentation", json={"name": None}, headers=AUTH)
    assert (reset.status_code, reset.json()) == (200, {"name": "blla", "chosen": None})
    assert ocr_line_count(client, png, "blla") == lines_with_blla
    for name in ("seg-blind", "seg-test-reader"):
        assert client.delete(f"/models/{name}", headers=AUTH).status_code == 204


@pytest.mark.slow
def test_a_document_reads_every_page_with_the_segmentation_model_version_it_started_with(
    client: httpx.Client, tmp_path: Path
) -> None:
    """A new version of the segmentation model that finds no lines, another segmentation model
    chosen, and the model removed, all while a 4-page document is read: every page is still cut
    by the version the document started with, and the response names it. (The store-level
    interleavings, recognition models included, are in test_model_pins.py.)"""
    # Tall pages: blla scales every page to 1800 px height, so its cost grows with the width it
    # scales to (450 px here; 3200 px for the same page lying 640x360, about 9 times the time).
    pages = [render_page(page_texts(40 + i, 2, 4), width=640, height=2560, font_size=32) for i in range(4)]
    pdf = to_tiff([p.image for p in pages])  # pages as drawn: no rasterising, the cheapest 4 pages
    cutter = packaged_as_safetensors(tmp_path / "cutter.safetensors")
    blind = blind_copy(cutter, tmp_path / "blind.safetensors")
    assert upload(client, cutter.read_bytes(), "cutter").status_code == 201
    try:
        assert client.put("/models/segmentation", json={"name": "cutter"}, headers=AUTH).status_code == 200
        reference = client.post("/ocr", files={"file": ("doc.tif", pdf)}).json()
        assert (reference["segmentationModel"], reference["segmentationModelVersion"]) == ("cutter", 1)
        assert all(page["lines"] for page in reference["pages"])

        events: list[dict[str, Any]] = []
        with client.stream("POST", "/ocr/stream", files={"file": ("doc.tif", pdf)}) as response:
            assert response.status_code == 200
            for raw in response.iter_lines():
                if not raw.strip():
                    continue
                events.append(json.loads(raw))
                if events[-1]["type"] == "page" and events[-1]["page"] == 1:
                    assert upload(client, blind.read_bytes(), "cutter", replace="true").json()["version"] == 2
                    assert client.put("/models/segmentation", json={"name": None}, headers=AUTH).status_code == 200
                    assert client.delete("/models/cutter", headers=AUTH).status_code == 204
        assert [e["type"] for e in events if e["type"] in ("page", "error")] == ["page"] * 4
        done = events[-1]
        assert (done["type"], done["segmentationModel"], done["segmentationModelVersion"]) == ("done", "cutter", 1)
        baselines = [[e["baseline"] for e in events if e["type"] == "line" and e["page"] == n] for n in range(1, 5)]
        expected = [[line["baseline"] for line in page["lines"]] for page in reference["pages"]]
        # The same lines as the reference, cut by the same model (the blind version finds none).
        assert baselines == expected
        # the next document uses what is chosen now (one page says so: a page read costs seconds)
        after = client.post("/ocr", files={"file": ("page.tif", to_tiff([pages[0].image]))}).json()
        assert after["segmentationModel"] != "cutter"
    finally:
        client.put("/models/segmentation", json={"name": None}, headers=AUTH)
        client.delete("/models/cutter", headers=AUTH)
