"""The model store: one directory of model files, their descriptions, backups and the default.

Layout (flat, so an operator can see and copy models with ``ls`` and ``cp``)::

    OCR_MODELS_DIR/
      <name>.safetensors | <name>.mlmodel   the current version of each model
      .meta/<name>.json                      kind, line type, source, version, scores
      .backups/<name>/v<version>-<time><ext> earlier versions (at most 3 per model)
      .staging/                              uploads and downloads while they are checked
      .state.json                            the chosen default recognition and segmentation models
      .store.lock                            serialises changes across processes

The packaged segmentation model (``blla``) lives in the kraken wheel and is listed, never copied.
Every change is written to a temporary file and moved into place with ``os.replace``.
A model file an operator copies in by hand is inspected once (in a child process) and its
facts are cached in ``.meta/<name>.json`` keyed by the file's mtime and size.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ocr_service.engine.inspect import MODEL_SUFFIXES, ModelFacts, ModelFileError
from ocr_service.engine.pipeline import ModelRef, packaged_segmentation_model
from ocr_service.errors import AppError, ErrorCode
from ocr_service.settings import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)

PACKAGED_SEGMENTATION = "blla"
MAX_BACKUPS = 3
# A staging file this old belongs to an upload whose process died; it is swept away.
STALE_STAGING_S = 24 * 3600
Source = Literal["packaged", "trained", "uploaded", "downloaded", "local"]


@dataclass
class ModelEntry:
    name: str
    kind: str | None
    line_type: str | None
    source: Source
    version: int
    created: str
    size: int
    alphabet_size: int | None = None
    input_height: int | None = None
    accuracy: float | None = None
    cer: float | None = None
    file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Why a hand-placed file cannot be used (it was inspected and refused); None if it can.
    problem: str | None = None

    def public(self, default: str | None, segmentation: str | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "lineType": self.line_type,
            "source": self.source,
            "version": self.version,
            "created": self.created,
            "size": self.size,
            "alphabetSize": self.alphabet_size,
            "inputHeight": self.input_height,
            "accuracy": self.accuracy,
            "cer": self.cer,
            "default": self.name == default,
            # the segmentation model /ocr finds lines with
            "segmentation": self.name == segmentation,
            "doi": self.extra.get("doi"),
            "problem": self.problem,
        }


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.fullmatch(name):
        raise AppError(
            ErrorCode.INVALID_MODEL_NAME,
            "A model name may contain only lowercase letters, digits and '-' (at most 64 characters), "
            "and must start and end with a letter or digit.",
        )
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class ModelStore:
    def __init__(
        self,
        root: Path,
        default_model: str | None = None,
        *,
        segmentation_model: Path | None = None,
        inspect: Callable[[Path], ModelFacts] | None = None,
    ) -> None:
        """``default_model`` and ``segmentation_model`` are the operator's settings (``OCR_DEFAULT_MODEL``,
        ``OCR_SEGMENTATION_MODEL``), used until an admin chooses otherwise through the store.
        ``inspect`` describes a model file nobody installed through the store (see :meth:`entry`)."""
        self.root = root
        self._configured_default = default_model
        self.configured_segmentation = segmentation_model
        self._inspect = inspect
        self._meta_dir = root / ".meta"
        self._backup_dir = root / ".backups"
        self.staging_dir = root / ".staging"
        for directory in (root, self._meta_dir, self._backup_dir, self.staging_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()

    def _sweep_staging(self) -> None:
        cutoff = time.time() - STALE_STAGING_S
        for leftover in self.staging_dir.iterdir():
            with contextlib.suppress(OSError):
                if leftover.lstat().st_mtime < cutoff:
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink()

    # --- locking -------------------------------------------------------------------------
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
        check_model_name(name)
        for suffix in MODEL_SUFFIXES:
            candidate = self.root / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def names(self) -> list[str]:
        found = {p.stem for p in self.root.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES}
        return sorted(n for n in found if MODEL_NAME_PATTERN.fullmatch(n))

    def _meta(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._meta_dir / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def entry(self, name: str) -> ModelEntry:
        if name == PACKAGED_SEGMENTATION and self.file_of(name) is None:
            return self._packaged_entry()
        path = self.file_of(name)
        if path is None:
            raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.")
        stat = path.stat()
        meta = self._meta(name) or {}
        if not _describes(meta, stat):
            # Put there by hand (or replaced by hand): we know only what the file says.
            meta = self._describe_local(name, path, stat, meta)
        return ModelEntry(
            name=name,
            kind=meta.get("kind"),
            line_type=meta.get("lineType"),
            source=meta.get("source", "local"),
            version=int(meta.get("version", 1)),
            created=meta.get("created") or datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds"),
            size=stat.st_size,
            alphabet_size=meta.get("alphabetSize"),
            input_height=meta.get("inputHeight"),
            accuracy=meta.get("accuracy"),
            cer=meta.get("cer"),
            file=path.name,
            extra=meta.get("extra", {}),
            problem=meta.get("problem"),
        )

    def _describe_local(self, name: str, path: Path, stat: os.stat_result, old: dict[str, Any]) -> dict[str, Any]:
        """Inspect a hand-placed file once and cache what it is, keyed by its mtime and size."""
        version = int(old.get("version", 0)) + 1 if old else 1
        meta: dict[str, Any] = {"source": "local", "version": version}
        if self._inspect is None:
            return meta
        try:
            facts = self._inspect(path)
        except ModelFileError as exc:
            log.warning("model file %s cannot be used: %s", path.name, exc)
            meta["problem"] = str(exc)
        else:
            meta.update(_facts_meta(facts))
        meta.update(
            created=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds"),
            size=stat.st_size,
            fileMtimeNs=stat.st_mtime_ns,
        )
        with self.locked():
            # Inspection ran unlocked (it takes seconds); cache only if nobody installed or
            # replaced the file meanwhile, or we would overwrite the installer's description.
            current = self.file_of(name)
            if current == path and _same_file_state(path.stat(), stat) and not _describes(self._meta(name) or {}, stat):
                _write_json(self._meta_dir / f"{name}.json", meta)
        return meta

    def _packaged_entry(self) -> ModelEntry:
        path = packaged_segmentation_model()
        stat = path.stat()
        return ModelEntry(
            name=PACKAGED_SEGMENTATION,
            kind="segmentation",
            line_type=None,
            source="packaged",
            version=1,
            created=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds"),
            size=stat.st_size,
            input_height=1800,
            file=str(path),
        )

    def entries(self) -> list[ModelEntry]:
        names = self.names()
        result = [self.entry(n) for n in names]
        if PACKAGED_SEGMENTATION not in names:
            result.insert(0, self._packaged_entry())
        return result

    # --- the default ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / ".state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @property
    def default_model(self) -> str | None:
        """The chosen default (through the API, kept on disk) wins over ``OCR_DEFAULT_MODEL``."""
        chosen = self._state().get("defaultModel")
        return chosen if isinstance(chosen, str) else self._configured_default

    def set_default(self, name: str | None) -> None:
        self._set_state("defaultModel", name, "recognition")

    def _set_state(self, key: str, name: str | None, kind: str) -> None:
        with self.locked():
            if name is not None and self.file_of(name) is None and name != PACKAGED_SEGMENTATION:
                raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.")
            # The caller checked the kind; a new version installed meanwhile is checked here.
            recorded = (self._meta(name) or {}).get("kind") if name is not None else None
            if recorded is not None and recorded != kind:
                raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is a {recorded} model, not a {kind} model.")
            state = self._state()
            state[key] = name
            _write_json(self.root / ".state.json", state)

    # --- the segmentation model ------------------------------------------------------------
    @property
    def chosen_segmentation(self) -> str | None:
        chosen = self._state().get("segmentationModel")
        return chosen if isinstance(chosen, str) else None

    def set_segmentation(self, name: str | None) -> None:
        """Choose the segmentation model of ``/ocr``; None goes back to ``OCR_SEGMENTATION_MODEL``."""
        self._set_state("segmentationModel", name, "segmentation")

    @property
    def segmentation_name(self) -> str:
        """The name of the segmentation model ``/ocr`` uses now (see :meth:`segmentation_model`)."""
        return self.segmentation_model(check=False, warn=False).name

    def configured_segmentation_file(self) -> Path | None:
        """The current file of ``OCR_SEGMENTATION_MODEL``. When it lies in the store, it is found
        by name: a new version trained or installed under that name may come in the other format
        (``house.mlmodel`` → ``house.safetensors``), and is still the configured model."""
        configured = self.configured_segmentation
        if configured is None:
            return None
        if configured.parent == self.root and MODEL_NAME_PATTERN.fullmatch(configured.stem):
            return self.file_of(configured.stem) or configured
        return configured

    def segmentation_model(self, *, check: bool = True, warn: bool = True) -> ModelRef:
        """The segmentation model ``/ocr`` should use now, with its file's version.

        The admin's choice wins, then ``OCR_SEGMENTATION_MODEL``, then the packaged model.
        Workers compare the version with what they have loaded, so a segmentation model that
        is chosen, or trained again under its name, is used by the next page without a restart.
        With ``check``, a chosen model the store knows to be unusable is an error, not a
        silent fallback.
        """
        chosen = self.chosen_segmentation
        if chosen is not None:
            path = self.file_of(chosen) if MODEL_NAME_PATTERN.fullmatch(chosen) else None
            if path is not None:
                meta = self._meta(chosen)
                if check and meta and _describes(meta, path.stat()):
                    problem = meta.get("problem") or (
                        f"it is a {meta['kind']} model" if meta.get("kind") not in (None, "segmentation") else None
                    )
                    if problem:
                        raise AppError(
                            ErrorCode.SEGMENTATION_MODEL_UNUSABLE,
                            f"OCR cannot run: the chosen segmentation model '{chosen}' cannot be used ({problem}). "
                            "An admin must choose another segmentation model (PUT /models/segmentation).",
                        )
                return ModelRef.of_file(chosen, path)
            if chosen == PACKAGED_SEGMENTATION:
                return ModelRef.of_file(PACKAGED_SEGMENTATION, packaged_segmentation_model())
            if warn:
                log.warning("the chosen segmentation model '%s' is not in the store; using the configured one", chosen)
        configured = self.configured_segmentation_file()
        if configured is not None:
            if configured.is_file():
                return ModelRef.of_file(configured.stem, configured)
            if warn:
                log.warning("OCR_SEGMENTATION_MODEL %s is missing; using the packaged segmentation model", configured)
        return ModelRef.of_file(PACKAGED_SEGMENTATION, packaged_segmentation_model())

    def _role_of(self, name: str) -> tuple[str, str] | None:
        """The kind of model ``name`` must stay, and why: the default reads, the segmentation model cuts lines."""
        if name == self.default_model:
            return "recognition", "the default recognition model"
        configured = self.configured_segmentation
        if name == self.chosen_segmentation or (
            configured is not None and configured.parent == self.root and configured.stem == name
        ):
            return "segmentation", "the segmentation model OCR uses"
        return None

    def recognition_model(self, name: str | None) -> ModelRef | None:
        """The model ``/ocr`` should read with: the named one, else the default, else none."""
        if name is None:
            name = self.default_model
            if name is None or self.file_of(name) is None:
                if name is not None:
                    log.warning("the default model '%s' is not in the store; reading without a model", name)
                return None
        else:
            try:
                check_model_name(name)
            except AppError as exc:
                raise AppError(ErrorCode.UNKNOWN_MODEL, f"There is no model named '{name}'.") from exc
        if name == PACKAGED_SEGMENTATION:
            raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is a segmentation model; choose a recognition model.")
        path = self.file_of(name)
        if path is None:
            raise AppError(
                ErrorCode.UNKNOWN_MODEL,
                f"There is no model named '{name}'. Installed: {', '.join(self.names()) or 'none'}.",
            )
        meta = self._meta(name)
        ref = ModelRef.of_file(name, path)
        if meta and _describes(meta, path.stat()) and meta.get("problem"):
            raise AppError(ErrorCode.INVALID_MODEL, f"The model file of '{name}' cannot be used: {meta['problem']}")
        if meta and meta.get("kind") == "segmentation":
            raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is a segmentation model; choose a recognition model.")
        return ref

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
        check_model_name(name)
        if name == PACKAGED_SEGMENTATION:
            raise AppError(ErrorCode.MODEL_PROTECTED, f"'{name}' is the packaged segmentation model's name.")
        suffix = source_file.suffix
        if suffix not in MODEL_SUFFIXES:
            raise AppError(ErrorCode.INVALID_MODEL, "Only .safetensors and .mlmodel files can be installed.")
        with self.locked():
            current = self.file_of(name)
            old_meta = self._meta(name) or {}
            if current is not None and not replace:
                raise AppError(
                    ErrorCode.MODEL_EXISTS,
                    f"A model named '{name}' exists already; send replace=true to install a new version.",
                )
            role = self._role_of(name)
            if current is not None and role is not None and facts.kind != role[0]:
                raise AppError(
                    ErrorCode.WRONG_MODEL_KIND,
                    f"'{name}' is {role[1]}; a new version must be a {role[0]} model, not a {facts.kind} model.",
                )
            version = int(old_meta.get("version", 0)) + 1 if current is not None else 1
            target = self.root / f"{name}{suffix}"
            staged = self.root / f".{name}{suffix}.incoming"
            if move:
                os.replace(source_file, staged)
            else:
                shutil.copyfile(source_file, staged)
            if current is not None:
                self._back_up(name, current, int(old_meta.get("version", version - 1)))
            os.replace(staged, target)
            if current is not None and current != target:
                current.unlink(missing_ok=True)  # the other format's file of the old version
            stat = target.stat()
            accuracy = (scores or {}).get("accuracy", facts.accuracy)
            cer = (scores or {}).get("cer")
            if cer is None and accuracy is not None:
                cer = round(1 - accuracy, 6)
            meta = {
                **_facts_meta(facts),
                "source": source,
                "version": version,
                "created": _now(),
                "size": stat.st_size,
                "fileMtimeNs": stat.st_mtime_ns,
                "accuracy": accuracy,
                "cer": cer,
                "extra": extra or {},
            }
            _write_json(self._meta_dir / f"{name}.json", meta)
        log.info("installed model %s version %d (%s, %s)", name, version, facts.kind, source)
        return self.entry(name)

    def _back_up(self, name: str, current: Path, version: int) -> None:
        folder = self._backup_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        backup = folder / f"v{version}-{stamp}{current.suffix}"
        # A hard link, not a move: the current file stays in place until the new one replaces it.
        try:
            os.link(current, backup)
        except OSError:
            shutil.copy2(current, backup)
        meta = self._meta_dir / f"{name}.json"
        if meta.exists():
            shutil.copyfile(meta, folder / f"v{version}-{stamp}.json")
        backups = sorted(
            (p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES), key=lambda p: p.stat().st_mtime_ns
        )
        for stale in backups[:-MAX_BACKUPS]:
            stale.unlink(missing_ok=True)
            stale.with_suffix(".json").unlink(missing_ok=True)

    def backups(self, name: str) -> list[Path]:
        folder = self._backup_dir / check_model_name(name)
        if not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES), key=lambda p: p.stat().st_mtime_ns)

    def remove(self, name: str, in_use: set[str] | None = None) -> None:
        """Remove the current version of ``name``; its backups stay in ``.backups/<name>``."""
        check_model_name(name)
        if name == PACKAGED_SEGMENTATION:
            raise AppError(ErrorCode.MODEL_PROTECTED, "The packaged segmentation model cannot be removed.")
        configured = self.configured_segmentation
        if configured is not None and configured.parent == self.root and configured.stem == name:
            raise AppError(
                ErrorCode.MODEL_PROTECTED,
                f"'{name}' is the segmentation model the OCR workers use (OCR_SEGMENTATION_MODEL); "
                "it cannot be removed.",
            )
        with self.locked():
            path = self.file_of(name)
            if path is None:
                raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.")
            if name == self.default_model:
                raise AppError(
                    ErrorCode.MODEL_IS_DEFAULT,
                    f"'{name}' is the default model; choose another default before removing it.",
                )
            if name == self.chosen_segmentation:
                raise AppError(
                    ErrorCode.MODEL_IS_DEFAULT,
                    f"'{name}' is the segmentation model OCR uses; choose another one (PUT /models/segmentation) "
                    "before removing it.",
                )
            if in_use and name in in_use:
                raise AppError(ErrorCode.MODEL_IN_USE, f"'{name}' is used by a running training job.")
            path.unlink()
            (self._meta_dir / f"{name}.json").unlink(missing_ok=True)
        log.info("removed model %s", name)


def _facts_meta(facts: ModelFacts) -> dict[str, Any]:
    return {
        "kind": facts.kind,
        "lineType": facts.line_type,
        "alphabetSize": facts.alphabet_size,
        "inputHeight": facts.input_height,
        "accuracy": facts.accuracy,
    }


def _same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_mtime_ns == b.st_mtime_ns and a.st_size == b.st_size


def _describes(meta: dict[str, Any], stat: os.stat_result) -> bool:
    """Whether ``meta`` was written for the file as it is now (same mtime and size)."""
    return meta.get("fileMtimeNs") == stat.st_mtime_ns and meta.get("size") == stat.st_size
