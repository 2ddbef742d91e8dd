"""The model store: one directory of model files, their descriptions, backups and the default.

Layout (flat, so an operator can see and copy models with ``ls`` and ``cp``)::

    OCR_MODELS_DIR/
      <name>.safetensors | <name>.mlmodel   the current version of each model
      .meta/<name>.json                      kind, line type, source, version, scores
      .backups/<name>/v<version>-<time><ext> earlier versions (at most 3 per model)
      .staging/                              uploads and downloads while they are checked
      .pins/<owner>/                         the files documents being read hold (model_pins)
      .state.json                            the chosen default recognition and segmentation models
      .store.lock                            serialises changes across processes

The packaged segmentation model (``blla``) lives in the kraken wheel and is listed, never copied.
Every change is written to a temporary file and moved into place with ``os.replace``.
A model file an operator copies in by hand is listed as ``checking`` until it has been
inspected (once, in the background: see :mod:`ocr_service.model_inspection`); its facts are
then kept in ``.meta/<name>.json`` keyed by the file's mtime and size.

The store knows files and versions only: it never loads a model (kraken stays in ``engine/``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ocr_service import model_rules
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_backups import back_up, list_backups
from ocr_service.model_choice import ModelChoices
from ocr_service.model_entry import (
    ModelEntry,
    Source,
    describes,
    facts_meta,
    iso_time,
    next_local_version,
    read_json,
    same_file_state,
    write_json,
)
from ocr_service.model_pins import ModelPin, ModelPins
from ocr_service.model_ref import MODEL_SUFFIXES, PACKAGED_SEGMENTATION, ModelFacts, ModelRef
from ocr_service.model_ref import packaged_segmentation_model as packaged_segmentation_model
from ocr_service.model_staging import sweep_staging
from ocr_service.settings import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)

MAX_BACKUPS = 3
# A staging file this old belongs to an upload whose process died; it is swept away.
STALE_STAGING_S = 24 * 3600


class ModelStore:
    def __init__(
        self,
        root: Path,
        default_model: str | None = None,
        *,
        segmentation_model: Path | None = None,
    ) -> None:
        """``default_model`` and ``segmentation_model`` are the operator's settings (``OCR_DEFAULT_MODEL``,
        ``OCR_SEGMENTATION_MODEL``), used until an admin chooses otherwise (see :class:`ModelChoices`)."""
        self.root = root
        self.configured_segmentation = segmentation_model
        self._meta_dir = root / ".meta"
        self._backup_dir = root / ".backups"
        self.staging_dir = root / ".staging"
        for directory in (root, self._meta_dir, self._backup_dir, self.staging_dir):
            directory.mkdir(parents=True, exist_ok=True)
        sweep_staging(self.staging_dir, STALE_STAGING_S)
        self.pins = ModelPins(root / ".pins")
        self.pins.sweep()
        self.choices = ModelChoices(self, default_model)
        self._on_unchecked: Callable[[str], None] | None = None

    def watch_unchecked(self, callback: Callable[[str], None]) -> None:
        """``callback(name)`` hears of each hand-placed file whose description is missing or outdated."""
        self._on_unchecked = callback

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.root / ".store.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- lookup --------------------------------------------------------------------------
    def file_of(self, name: str) -> Path | None:
        """The current file of model ``name``; safetensors wins if both formats lie there."""
        model_rules.check_model_name(name)
        for suffix in MODEL_SUFFIXES:
            candidate = self.root / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def names(self) -> list[str]:
        found = {p.stem for p in self.root.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES}
        return sorted(n for n in found if MODEL_NAME_PATTERN.fullmatch(n))

    def meta(self, name: str) -> dict[str, Any] | None:
        return read_json(self._meta_dir / f"{name}.json")

    def entry_is_stale(self, name: str, stat: os.stat_result) -> bool:
        """Whether ``name``'s description is missing or was written for another file state."""
        return not describes(self.meta(name) or {}, stat)

    def ref(self, name: str, path: Path) -> ModelRef:
        """``path`` as a reference with its store version (a hand-changed file counts one more)."""
        ref = ModelRef.of_file(name, path)
        meta = self.meta(name)
        if meta and (meta.get("fileMtimeNs"), meta.get("size")) == ref.stamp:
            return ModelRef(name, ref.path, ref.stamp, int(meta.get("version", 1)))
        return ModelRef(name, ref.path, ref.stamp, next_local_version(meta))

    def entry(self, name: str) -> ModelEntry:
        if name == PACKAGED_SEGMENTATION and self.file_of(name) is None:
            return ModelEntry.packaged(packaged_segmentation_model())
        path = self.file_of(name)
        if path is None:
            raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.")
        stat = path.stat()
        meta = self.meta(name) or {}
        if not describes(meta, stat) and self._on_unchecked is not None:
            self._on_unchecked(name)  # the command line inspects at once; the service queues it
            meta = self.meta(name) or {}
        if describes(meta, stat):
            return ModelEntry.from_meta(name, path, stat, meta)
        # Put there (or replaced) by hand and not inspected yet: only what the file system says.
        return ModelEntry(
            name=name,
            kind=None,
            line_type=None,
            source="local",
            version=next_local_version(meta),
            created=iso_time(stat.st_mtime),
            size=stat.st_size,
            file=path.name,
            checking=True,
        )

    def record_inspection(
        self, name: str, path: Path, stat: os.stat_result, facts: ModelFacts | None, problem: str | None
    ) -> None:
        """Keep what inspecting a hand-placed file found, unless the file changed meanwhile."""
        with self.locked():
            old = self.meta(name)
            current = self.file_of(name)
            if current != path or not same_file_state(path.stat(), stat) or (old and describes(old, stat)):
                return  # replaced, removed or installed meanwhile: the installer's description stands
            meta: dict[str, Any] = {"source": "local", "version": next_local_version(old)}
            if facts is not None:
                meta.update(facts_meta(facts))
            else:
                meta["problem"] = problem
            meta.update(created=iso_time(stat.st_mtime), size=stat.st_size, fileMtimeNs=stat.st_mtime_ns)
            write_json(self._meta_dir / f"{name}.json", meta)

    def entries(self) -> list[ModelEntry]:
        names = self.names()
        result = [self.entry(n) for n in names]
        if PACKAGED_SEGMENTATION not in names:
            result.insert(0, ModelEntry.packaged(packaged_segmentation_model()))
        return result

    # --- what /ocr reads with (see ModelChoices) ------------------------------------------
    @property
    def default_model(self) -> str | None:
        return self.choices.default_model

    @property
    def chosen_segmentation(self) -> str | None:
        return self.choices.chosen_segmentation

    @property
    def segmentation_name(self) -> str:
        return self.choices.segmentation_model(check=False, warn=False).name

    def set_default(self, name: str | None) -> None:
        self.choices.choose("defaultModel", name, "recognition")

    def set_segmentation(self, name: str | None) -> None:
        self.choices.choose("segmentationModel", name, "segmentation")

    def configured_segmentation_file(self) -> Path | None:
        return self.choices.configured_segmentation_file()

    def segmentation_model(self, *, check: bool = True, warn: bool = True) -> ModelRef:
        return self.choices.segmentation_model(check=check, warn=warn)

    def recognition_model(self, name: str | None) -> ModelRef | None:
        return self.choices.recognition_model(name)

    def pin_models(self, recognition: str | None) -> ModelPin:
        """Resolve and pin the models of a document that starts now (release the pin at its end).

        Resolving and linking happen under the store lock, so no install or removal through
        the store falls between them; a file changed by hand meanwhile is resolved once more.
        """
        return self.pins.pin(lambda: (self.recognition_model(recognition), self.segmentation_model()), self.locked)

    # --- changes -------------------------------------------------------------------------
    def install(
        self,
        source_file: Path,
        name: str,
        facts: ModelFacts,
        *,
        source: Source,
        replace: bool,
        extra: dict[str, Any] | None = None,
        scores: dict[str, float | None] | None = None,
        move: bool = False,
    ) -> ModelEntry:
        """Install a validated model file atomically; the old version becomes a backup.

        ``move=True`` moves ``source_file`` (it must lie in this store, e.g. in ``staging_dir``)
        instead of copying it. The name keeps pointing at a complete file throughout: the
        old version is linked into the backups before the new one replaces it.
        """
        model_rules.check_new_model_name(name)
        suffix = source_file.suffix
        if suffix not in MODEL_SUFFIXES:
            raise AppError(ErrorCode.INVALID_MODEL, "Only .safetensors and .mlmodel files can be installed.")
        with self.locked():
            current = self.file_of(name)
            old_meta = self.meta(name) or {}
            model_rules.check_may_install(name, current is not None, replace)
            role = self.choices.role_of(name)
            if current is not None and role is not None:
                model_rules.check_kind(name, facts.kind, role[0], role=role[1])
            version = int(old_meta.get("version", 0)) + 1 if current is not None else 1
            target = self.root / f"{name}{suffix}"
            staged = self.root / f".{name}{suffix}.incoming"
            if move:
                os.replace(source_file, staged)
            else:
                shutil.copyfile(source_file, staged)
            if current is not None:
                back_up(
                    self._backup_dir / name,
                    current,
                    int(old_meta.get("version", version - 1)),
                    self._meta_dir / f"{name}.json",
                    keep=MAX_BACKUPS,
                )
            os.replace(staged, target)
            if current is not None and current != target:
                current.unlink(missing_ok=True)  # the other format's file of the old version
            stat = target.stat()
            accuracy = (scores or {}).get("accuracy", facts.accuracy)
            cer = (scores or {}).get("cer")
            if cer is None and accuracy is not None:
                cer = round(1 - accuracy, 6)
            meta = {
                **facts_meta(facts),
                "source": source,
                "version": version,
                "created": iso_time(),
                "size": stat.st_size,
                "fileMtimeNs": stat.st_mtime_ns,
                "accuracy": accuracy,
                "cer": cer,
                "extra": extra or {},
            }
            write_json(self._meta_dir / f"{name}.json", meta)
        log.info("installed model %s version %d (%s, %s)", name, version, facts.kind, source)
        return self.entry(name)

    def backups(self, name: str) -> list[Path]:
        return list_backups(self._backup_dir / model_rules.check_model_name(name))

    def remove(self, name: str, in_use: set[str] | None = None) -> None:
        """Remove the current version of ``name``; its backups stay in ``.backups/<name>``.

        Documents being read with it go on with their pinned file (see :mod:`ocr_service.model_pins`)."""
        model_rules.check_model_name(name)
        configured = self.configured_segmentation
        is_configured = configured is not None and configured.parent == self.root and configured.stem == name
        with self.locked():
            model_rules.check_removable(
                name,
                protected_by="the segmentation model the OCR workers use (OCR_SEGMENTATION_MODEL)"
                if is_configured
                else None,
                chosen_as=None,
                in_use_by=None,
            )
            path = self.file_of(name)
            if path is None:
                raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.")
            model_rules.check_removable(
                name,
                protected_by=None,
                chosen_as=self.choices.chosen_as(name),
                in_use_by="a running training job" if in_use and name in in_use else None,
            )
            path.unlink()
            (self._meta_dir / f"{name}.json").unlink(missing_ok=True)
        log.info("removed model %s", name)
