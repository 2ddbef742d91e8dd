"""Model management without HTTP: format sniffing, installing, backups, the default, removal.

Most tests inject a stand-in for kraken's loader (the child-process validation is tested
for real in test_models_api.py); the files are still real safetensors/CoreML/pickle bytes,
so the sniffing in front of the loader is the real one.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

from ocr_service.engine.inspect import ModelFacts, ModelFileError
from ocr_service.engine.validate import model_checker
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_format import sniff_model_format
from ocr_service.model_inspection import LocalModelInspector, ModelChecker
from ocr_service.model_repository import parse_doi, slug_from_filename
from ocr_service.models_admin import InstallRequest, ModelAdmin
from ocr_service.store import MAX_BACKUPS, ModelStore
from tests.conftest import make_settings

RECOGNITION = ModelFacts(kind="recognition", line_type="bbox", alphabet="abc ", input_height=32)
SEGMENTATION = ModelFacts(kind="segmentation", line_type=None, alphabet=None, input_height=1800)


def safetensors_bytes(metadata: dict[str, str] | None = None, header_pad: int = 0) -> bytes:
    """A structurally valid safetensors file: one float32 tensor of two zeros."""
    header: dict[str, object] = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    header["__metadata__"] = metadata or {"kraken_meta": "{}"}
    raw = json.dumps(header).encode() + b" " * header_pad
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * 8


def coreml_like_bytes() -> bytes:
    """Bytes that begin like a CoreML protobuf (specificationVersion 4, then a description)."""
    return b"\x08\x04\x12\x10" + b"\x0a\x05input" + b"\x00" * 64


class FakeLoader:
    """Stands in for the child-process validation; records what it was shown."""

    def __init__(self, facts: ModelFacts = RECOGNITION, error: str | None = None) -> None:
        self.facts = facts
        self.error = error
        self.seen: list[Path] = []

    def __call__(self, path: Path) -> ModelFacts:
        self.seen.append(path)
        if self.error:
            raise ModelFileError(self.error)
        return self.facts


def store_files(root: Path) -> set[str]:
    """Every file under the store, except the lock file that any reader may create."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".store.lock"}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def inspecting_store(root: Path, loader: FakeLoader) -> ModelStore:
    """A store that inspects a hand-placed file at once, as on the operator's command line."""
    store = ModelStore(root)
    store.watch_unchecked(LocalModelInspector(store, ModelChecker(loader)).inspect)
    return store


def make_admin(store: ModelStore, loader: FakeLoader | None = None, **kwargs: object) -> ModelAdmin:
    return ModelAdmin(store, max_bytes=kwargs.pop("max_bytes", 10_000), validate=loader or FakeLoader(), **kwargs)  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- sniffing ---------------------------------------------------------------------------


def test_sniff_recognises_safetensors_by_bytes_whatever_the_name(tmp_path: Path) -> None:
    assert sniff_model_format(write(tmp_path, "model.mlmodel", safetensors_bytes())) == ".safetensors"


def test_sniff_recognises_coreml_by_bytes(tmp_path: Path) -> None:
    assert sniff_model_format(write(tmp_path, "model.safetensors", coreml_like_bytes())) == ".mlmodel"


def test_sniff_takes_safetensors_whose_header_length_starts_like_a_pickle(tmp_path: Path) -> None:
    data = safetensors_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    padded = safetensors_bytes(header_pad=0x0A80 - header_len)  # header length 2688 = 80 0a 00 …
    assert padded[:2] == b"\x80\x0a"
    assert sniff_model_format(write(tmp_path, "m.safetensors", padded)) == ".safetensors"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_sniff_refuses_a_pickle_renamed_safetensors(tmp_path: Path, protocol: int) -> None:
    data = pickle.dumps({"state_dict": {"w": [0.0] * 100}}, protocol=protocol)
    with pytest.raises(AppError) as refused:
        sniff_model_format(write(tmp_path, "m.safetensors", data))
    assert refused.value.code == ErrorCode.INVALID_MODEL
    assert "pickle" in refused.value.message


def test_sniff_refuses_a_real_torch_checkpoint(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    with pytest.raises(AppError) as refused:
        sniff_model_format(path)
    assert refused.value.code == ErrorCode.INVALID_MODEL
    assert "ZIP" in refused.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"this is certainly not a model " * 10,
        b"%PDF-1.7\n" + b"0" * 100,
        b"\x89PNG\r\n\x1a\n" + b"0" * 100,
        b"\x7fELF" + b"0" * 100,
        struct.pack("<Q", 10_000) + b"{}" + b"0" * 50,  # safetensors header longer than the file
        struct.pack("<Q", 5) + b"[1,2]" + b"0" * 50,  # header not a JSON object
    ],
    ids=["text", "pdf", "png", "elf", "truncated-safetensors", "not-an-object"],
)
def test_sniff_refuses_what_is_no_model(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(AppError) as refused:
        sniff_model_format(write(tmp_path, "m.mlmodel", data))
    assert refused.value.code == ErrorCode.INVALID_MODEL


def test_sniff_refuses_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(AppError) as refused:
        sniff_model_format(write(tmp_path, "m.mlmodel", b""))
    assert refused.value.code == ErrorCode.INVALID_MODEL
    assert "empty" in refused.value.message


def test_a_file_that_only_looks_like_coreml_is_refused_by_the_real_loader(tmp_path: Path) -> None:
    path = write(tmp_path, "g.mlmodel", coreml_like_bytes())
    with pytest.raises(ModelFileError):
        model_checker(make_settings(tmp_path / "models"))(path)


# --- names ------------------------------------------------------------------------------


def test_names_from_files_and_dois() -> None:
    assert slug_from_filename("german_handwriting.mlmodel") == "german-handwriting"
    assert slug_from_filename("/tmp/Best_0.97.safetensors") == "best-0-97"
    assert parse_doi("10.5281/zenodo.7933463") == "10.5281/zenodo.7933463"
    assert parse_doi("https://doi.org/10.5281/zenodo.7933463") == "10.5281/zenodo.7933463"
    assert parse_doi("doi:10.5281/zenodo.7933463") == "10.5281/zenodo.7933463"
    assert parse_doi("./models/german.mlmodel") is None


@pytest.mark.parametrize("name", ["../evil", "a/b", "Upper", "", "-lead", "x" * 65, ".hidden", "a..b/c"])
def test_bad_names_are_refused_before_the_loader_runs(store: ModelStore, tmp_path: Path, name: str) -> None:
    loader = FakeLoader()
    admin = make_admin(store, loader)
    before = store_files(store.root)
    with pytest.raises(AppError) as refused:
        admin.install_file(write(tmp_path, "m.safetensors", safetensors_bytes()), InstallRequest(name=name))
    assert refused.value.code == ErrorCode.INVALID_MODEL_NAME
    assert loader.seen == []
    assert store_files(store.root) == before


# --- installing -------------------------------------------------------------------------


def test_install_writes_the_sniffed_suffix_and_describes_the_model(store: ModelStore, tmp_path: Path) -> None:
    loader = FakeLoader()
    admin = make_admin(store, loader)
    described = admin.install_file(
        write(tmp_path, "whatever.mlmodel", safetensors_bytes()), InstallRequest(name="kurrent")
    )
    assert (store.root / "kurrent.safetensors").is_file()
    assert not (store.root / "kurrent.mlmodel").exists()
    # the loader saw a staging file in the store, named by us and not by the client
    assert loader.seen[0].parent == store.staging_dir
    assert "whatever" not in loader.seen[0].name
    assert described["kind"] == "recognition"
    assert described["lineType"] == "bbox"
    assert described["alphabetSize"] == 4
    assert described["inputHeight"] == 32
    assert described["source"] == "uploaded"
    assert described["version"] == 1
    assert described["default"] is False
    assert list(store.staging_dir.iterdir()) == []


def test_a_file_the_loader_refuses_is_not_installed(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store, FakeLoader(error="Wire format was corrupt"))
    before = store_files(store.root)
    with pytest.raises(AppError) as refused:
        admin.install_file(write(tmp_path, "m.mlmodel", coreml_like_bytes()), InstallRequest(name="broken"))
    assert refused.value.code == ErrorCode.INVALID_MODEL
    assert "Wire format was corrupt" in refused.value.message
    assert store_files(store.root) == before


def test_an_oversized_file_is_refused_while_it_is_copied(store: ModelStore, tmp_path: Path) -> None:
    loader = FakeLoader()
    admin = make_admin(store, loader, max_bytes=100)
    before = store_files(store.root)
    with pytest.raises(AppError) as refused:
        admin.install_file(write(tmp_path, "m.safetensors", safetensors_bytes()), InstallRequest(name="big"))
    assert refused.value.code == ErrorCode.MODEL_TOO_LARGE
    assert loader.seen == []
    assert store_files(store.root) == before


def test_an_existing_name_needs_replace(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store)
    model = write(tmp_path, "m.safetensors", safetensors_bytes())
    admin.install_file(model, InstallRequest(name="kurrent"))
    before = store_files(store.root)
    with pytest.raises(AppError) as refused:
        admin.install_file(model, InstallRequest(name="kurrent"))
    assert refused.value.code == ErrorCode.MODEL_EXISTS
    assert store_files(store.root) == before


def test_replace_keeps_at_most_three_backups_and_counts_versions(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store)
    versions = [write(tmp_path, f"v{i}.safetensors", safetensors_bytes({"v": str(i)})) for i in range(1, 6)]
    admin.install_file(versions[0], InstallRequest(name="kurrent"))
    for path in versions[1:]:
        described = admin.install_file(path, InstallRequest(name="kurrent", replace=True))
    assert described["version"] == 5
    backups = store.backups("kurrent")
    assert len(backups) == MAX_BACKUPS
    assert [b.read_bytes() for b in backups] == [p.read_bytes() for p in versions[1:4]]
    assert (store.root / "kurrent.safetensors").read_bytes() == versions[4].read_bytes()


def test_replace_with_another_format_leaves_one_current_file(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store)
    admin.install_file(write(tmp_path, "a.safetensors", safetensors_bytes()), InstallRequest(name="kurrent"))
    admin.install_file(write(tmp_path, "b.mlmodel", coreml_like_bytes()), InstallRequest(name="kurrent", replace=True))
    assert store.file_of("kurrent") == store.root / "kurrent.mlmodel"
    assert not (store.root / "kurrent.safetensors").exists()
    assert len(store.backups("kurrent")) == 1


def test_install_as_default_needs_a_recognition_model(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store, FakeLoader(SEGMENTATION))
    before = store_files(store.root)
    with pytest.raises(AppError) as refused:
        admin.install_file(
            write(tmp_path, "seg.mlmodel", coreml_like_bytes()), InstallRequest(name="seg", make_default=True)
        )
    assert refused.value.code == ErrorCode.WRONG_MODEL_KIND
    assert store_files(store.root) == before
    assert store.default_model is None


# --- the default ------------------------------------------------------------------------


def test_the_chosen_default_survives_a_new_store_and_wins_over_the_setting(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store)
    admin.install_file(write(tmp_path, "m.safetensors", safetensors_bytes()), InstallRequest(name="kurrent"))
    assert admin.set_default("kurrent") == {"name": "kurrent"}
    reopened = ModelStore(store.root, default_model="other")
    assert reopened.default_model == "kurrent"
    ref = reopened.recognition_model(None)
    assert ref is not None and ref.name == "kurrent"


def test_a_segmentation_model_cannot_be_the_default(store: ModelStore, tmp_path: Path) -> None:
    admin = make_admin(store, FakeLoader(SEGMENTATION))
    admin.install_file(write(tmp_path, "seg.mlmodel", coreml_like_bytes()), InstallRequest(name="seg"))
    for name in ("seg", "blla"):
        with pytest.raises(AppError) as refused:
            admin.set_default(name)
        assert refused.value.code == ErrorCode.WRONG_MODEL_KIND
    assert store.default_model is None


def test_an_unknown_default_is_not_found(store: ModelStore) -> None:
    with pytest.raises(AppError) as refused:
        make_admin(store).set_default("nothing-here")
    assert refused.value.code == ErrorCode.MODEL_NOT_FOUND


# --- removing ---------------------------------------------------------------------------


def test_remove_refuses_packaged_default_protected_and_in_use(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = ModelStore(root, segmentation_model=root / "myseg.safetensors")
    in_use: set[str] = {"busy"}
    admin = make_admin(store, models_in_use=lambda: in_use)
    seg_admin = make_admin(store, FakeLoader(SEGMENTATION))
    for name in ("kurrent", "busy", "myseg", "spare", "chosen-seg"):
        installer = seg_admin if name.endswith("seg") else admin
        installer.install_file(write(tmp_path, f"{name}.safetensors", safetensors_bytes()), InstallRequest(name=name))
    admin.set_default("kurrent")
    admin.set_segmentation("chosen-seg")
    expected = {
        "blla": ErrorCode.MODEL_PROTECTED,
        "myseg": ErrorCode.MODEL_PROTECTED,
        "kurrent": ErrorCode.MODEL_IS_DEFAULT,
        "chosen-seg": ErrorCode.MODEL_IS_DEFAULT,
        "busy": ErrorCode.MODEL_IN_USE,
        "missing": ErrorCode.MODEL_NOT_FOUND,
    }
    for name, code in expected.items():
        with pytest.raises(AppError) as refused:
            admin.remove(name)
        assert refused.value.code == code, name
    admin.remove("spare")
    assert store.file_of("spare") is None
    assert [e["name"] for e in admin.entries()] == ["blla", "busy", "chosen-seg", "kurrent", "myseg"]
    with pytest.raises(AppError) as gone:
        store.recognition_model("spare")
    assert gone.value.code == ErrorCode.UNKNOWN_MODEL


def test_the_configured_default_cannot_be_removed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", default_model="kurrent")
    admin = make_admin(store)
    admin.install_file(write(tmp_path, "m.safetensors", safetensors_bytes()), InstallRequest(name="kurrent"))
    with pytest.raises(AppError) as refused:
        admin.remove("kurrent")
    assert refused.value.code == ErrorCode.MODEL_IS_DEFAULT


# --- the segmentation model of /ocr -------------------------------------------------------


def test_the_segmentation_model_is_the_chosen_one_then_the_configured_one_then_blla(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "models"
    configured = root / "house-seg.safetensors"
    store = ModelStore(root, segmentation_model=configured)
    admin = make_admin(store, FakeLoader(SEGMENTATION))
    packaged = store.segmentation_model()
    assert packaged.name == "blla"  # the configured file is not there (yet)
    assert "missing" in caplog.text

    admin.install_file(write(tmp_path, "a.safetensors", safetensors_bytes()), InstallRequest(name="house-seg"))
    admin.install_file(write(tmp_path, "b.safetensors", safetensors_bytes()), InstallRequest(name="trained-seg"))
    assert (store.segmentation_model().name, store.segmentation_model().path) == ("house-seg", str(configured))

    assert admin.set_segmentation("trained-seg") == {"name": "trained-seg", "chosen": "trained-seg"}
    first = store.segmentation_model()
    assert first.name == "trained-seg"
    assert [e["name"] for e in admin.entries() if e["segmentation"]] == ["trained-seg"]
    # a new version under the same name gives a new version stamp: workers reload it
    admin.install_file(
        write(tmp_path, "c.safetensors", safetensors_bytes({"v": "2"})),
        InstallRequest(name="trained-seg", replace=True),
    )
    second = store.segmentation_model()
    assert (second.name, second.path) == (first.name, first.path) and second.version != first.version

    # the choice survives a restart (it lives in the store), and None goes back to the setting
    assert ModelStore(root, segmentation_model=configured).segmentation_model().name == "trained-seg"
    assert admin.set_segmentation(None) == {"name": "house-seg", "chosen": None}
    assert admin.set_segmentation("blla")["name"] == "blla"
    assert store.segmentation_model().path == packaged.path


def test_the_configured_segmentation_model_is_found_by_name_in_either_format(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = ModelStore(root, segmentation_model=root / "house.mlmodel")
    admin = make_admin(store, FakeLoader(SEGMENTATION))
    admin.install_file(write(tmp_path, "h.mlmodel", coreml_like_bytes()), InstallRequest(name="house"))
    assert store.segmentation_model().path == str(root / "house.mlmodel")
    # retrained: the new version comes as safetensors, the old file is gone — still the one in use
    admin.install_file(
        write(tmp_path, "h.safetensors", safetensors_bytes()), InstallRequest(name="house", replace=True)
    )
    assert not (root / "house.mlmodel").exists()
    assert store.configured_segmentation_file() == root / "house.safetensors"
    assert (store.segmentation_model().name, store.segmentation_model().path) == (
        "house",
        str(root / "house.safetensors"),
    )
    with pytest.raises(AppError) as refused:
        admin.remove("house")
    assert refused.value.code == ErrorCode.MODEL_PROTECTED


def test_a_new_version_of_a_model_in_use_must_be_of_the_same_kind(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    readers, cutters = make_admin(store), make_admin(store, FakeLoader(SEGMENTATION))
    readers.install_file(write(tmp_path, "r.safetensors", safetensors_bytes()), InstallRequest(name="kurrent"))
    cutters.install_file(write(tmp_path, "s.safetensors", safetensors_bytes()), InstallRequest(name="seg"))
    readers.set_default("kurrent")
    cutters.set_segmentation("seg")
    before = store_files(store.root)
    for admin, name in ((cutters, "kurrent"), (readers, "seg")):
        other = write(tmp_path, "other.safetensors", safetensors_bytes({"other": name}))
        with pytest.raises(AppError) as refused:
            admin.install_file(other, InstallRequest(name=name, replace=True))
        assert refused.value.code == ErrorCode.WRONG_MODEL_KIND, name
    assert store_files(store.root) == before
    # a model nothing depends on may change its kind with a new version
    readers.install_file(write(tmp_path, "x.safetensors", safetensors_bytes()), InstallRequest(name="spare"))
    cutters.install_file(
        write(tmp_path, "y.safetensors", safetensors_bytes()), InstallRequest(name="spare", replace=True)
    )
    assert store.entry("spare").kind == "segmentation"


def test_only_a_usable_segmentation_model_can_be_chosen(tmp_path: Path) -> None:
    store = inspecting_store(tmp_path / "models", FakeLoader(error="not a model"))
    admin = make_admin(store)  # installs recognition models
    admin.install_file(write(tmp_path, "r.safetensors", safetensors_bytes()), InstallRequest(name="reader"))
    (store.root / "junk.mlmodel").write_bytes(b"junk")
    for name, code in (
        ("reader", ErrorCode.WRONG_MODEL_KIND),
        ("junk", ErrorCode.INVALID_MODEL),
        ("nothing-here", ErrorCode.MODEL_NOT_FOUND),
        ("../../etc/passwd", ErrorCode.MODEL_NOT_FOUND),
    ):
        with pytest.raises(AppError) as refused:
            admin.set_segmentation(name)
        assert refused.value.code == code, name
    assert store.chosen_segmentation is None


def test_a_chosen_segmentation_model_that_turns_unusable_stops_ocr_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loader = FakeLoader(SEGMENTATION)
    store = inspecting_store(tmp_path / "models", loader)
    admin = make_admin(store, loader)
    admin.install_file(write(tmp_path, "s.safetensors", safetensors_bytes()), InstallRequest(name="seg"))
    admin.set_segmentation("seg")
    # replaced by hand with a recognition model: once the store has looked at the file, /ocr refuses
    loader.facts = RECOGNITION
    (store.root / "seg.safetensors").write_bytes(safetensors_bytes({"other": "file"}))
    assert store.entry("seg").kind == "recognition"
    with pytest.raises(AppError) as refused:
        store.segmentation_model()
    assert refused.value.code == ErrorCode.SEGMENTATION_MODEL_UNUSABLE
    assert "'seg'" in refused.value.message and "recognition" in refused.value.message
    # deleted by hand: OCR goes on with the packaged model, and says so in the log
    (store.root / "seg.safetensors").unlink()
    assert store.segmentation_model().name == "blla"
    assert "not in the store" in caplog.text


# --- files an operator drops in -----------------------------------------------------------


def test_a_dropped_in_file_is_inspected_once_and_cached(tmp_path: Path) -> None:
    loader = FakeLoader()
    store = inspecting_store(tmp_path / "models", loader)
    (store.root / "handmade.safetensors").write_bytes(safetensors_bytes())
    first = store.entry("handmade")
    second = store.entry("handmade")
    assert len(loader.seen) == 1
    assert (first.source, first.kind, first.line_type) == ("local", "recognition", "bbox")
    assert second == first
    (store.root / "handmade.safetensors").write_bytes(safetensors_bytes({"changed": "yes"}))
    third = store.entry("handmade")
    assert len(loader.seen) == 2
    assert third.version == first.version + 1


def test_a_dropped_in_file_kraken_refuses_is_listed_with_its_problem(tmp_path: Path) -> None:
    store = inspecting_store(tmp_path / "models", FakeLoader(error="not a model"))
    (store.root / "junk.mlmodel").write_bytes(b"junk")
    entry = store.entry("junk")
    assert entry.kind is None
    assert entry.problem == "not a model"
    with pytest.raises(AppError) as refused:
        store.recognition_model("junk")
    assert refused.value.code == ErrorCode.INVALID_MODEL


def test_a_stale_staging_file_is_swept_when_the_store_opens(tmp_path: Path) -> None:
    import os
    import time

    store = ModelStore(tmp_path / "models")
    stale = store.staging_dir / "dead.part"
    stale.write_bytes(b"x")
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = store.staging_dir / "live.part"
    fresh.write_bytes(b"y")
    ModelStore(store.root)
    assert not stale.exists()
    assert fresh.exists()
