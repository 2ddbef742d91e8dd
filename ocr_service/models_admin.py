"""Bring your own model: receive, recognise, validate, install, describe, choose and remove.

Shared by the HTTP routes (``ocr_service/api/models.py``) and the operator's command line
(``ocr_service/cli.py``), so both refuse the same files for the same reasons.

Safety, in order: a candidate file is written only into the store's staging folder, under a
name of our own (:mod:`ocr_service.model_staging`); its format is recognised from its bytes
(:mod:`ocr_service.model_format`); kraken then loads it in a child process with a time and
memory limit, one at a time (:class:`ModelChecker`); only then does the store install it
atomically. The rules on names and kinds are :mod:`ocr_service.model_rules`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocr_service import model_rules
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_entry import ModelEntry, Source
from ocr_service.model_format import sniff_model_format
from ocr_service.model_inspection import LocalModelInspector, ModelChecker
from ocr_service.model_ref import ModelFacts, ModelFileError
from ocr_service.model_repository import ModelRepository, slug_from_filename
from ocr_service.model_staging import ModelStaging, StagedFile
from ocr_service.settings import Settings
from ocr_service.store import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstallRequest:
    name: str
    replace: bool = False
    make_default: bool = False


class ModelAdmin:
    """What an admin or operator may do with the model store."""

    def __init__(
        self,
        store: ModelStore,
        *,
        max_bytes: int,
        validate: Callable[[Path], ModelFacts] | None = None,
        checker: ModelChecker | None = None,
        models_in_use: Callable[[], set[str]] = set,
    ) -> None:
        """``checker`` loads candidates (one at a time); ``validate`` builds one of our own."""
        self.store = store
        self.max_bytes = max_bytes
        if checker is None:
            if validate is None:
                raise TypeError("ModelAdmin needs a checker or a validate function")
            checker = ModelChecker(validate)
        self.checker = checker
        self.inspector = LocalModelInspector(store, self.checker)
        self._staging = ModelStaging(store.staging_dir, max_bytes)
        self._models_in_use = models_in_use

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: ModelStore,
        models_in_use: Callable[[], set[str]] = set,
        checker: ModelChecker | None = None,
    ) -> ModelAdmin:
        return cls(
            store,
            max_bytes=settings.max_model_bytes,
            checker=checker or ModelChecker.from_settings(settings),
            models_in_use=models_in_use,
        )

    # --- reading -------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        default, segmentation = self.store.default_model, self.store.segmentation_name
        return [entry.public(default, segmentation) for entry in self.store.entries()]

    def describe(self, name: str) -> dict[str, Any]:
        entry = self.store.entry(model_rules.known_model_name(name))
        return entry.public(self.store.default_model, self.store.segmentation_name)

    def _inspected_entry(self, name: str) -> ModelEntry:
        """The entry of ``name``, inspecting a hand-placed file first if need be (an admin's
        choice is judged by what the file is, not by "being checked")."""
        entry = self.store.entry(model_rules.known_model_name(name))
        if entry.checking:
            self.inspector.inspect(name)
            entry = self.store.entry(name)
        return entry

    # --- receiving and installing -------------------------------------------------------
    @contextmanager
    def staging(self) -> Iterator[StagedFile]:
        """A fresh staging file in the store, named by us, removed whatever happens."""
        with self._staging.staged() as staged:
            yield staged

    def install_staged(
        self,
        staged: StagedFile,
        request: InstallRequest,
        *,
        source: Source,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check and install a received file; it leaves the staging folder either way."""
        staged.close()
        name = model_rules.check_new_model_name(request.name)
        model_rules.check_may_install(name, self.store.file_of(name) is not None, request.replace)
        suffix = sniff_model_format(staged.path)
        candidate = staged.path.with_name(f"{staged.path.stem}{suffix}")
        os.replace(staged.path, candidate)
        try:
            facts = self._check_loads(candidate)
            if request.make_default and facts.kind != "recognition":
                raise AppError(
                    ErrorCode.WRONG_MODEL_KIND,
                    f"This is a {facts.kind} model; only a recognition model can be the default.",
                )
            self.store.install(candidate, name, facts, source=source, replace=request.replace, extra=extra, move=True)
        finally:
            candidate.unlink(missing_ok=True)
        if request.make_default:
            self.store.set_default(name)
        return self.describe(name)

    def _check_loads(self, candidate: Path) -> ModelFacts:
        try:
            facts = self.checker.facts(candidate)
        except ModelFileError as exc:
            raise AppError(ErrorCode.INVALID_MODEL, f"kraken cannot use this file: {exc}") from exc
        if facts.kind not in ("recognition", "segmentation"):
            raise AppError(ErrorCode.INVALID_MODEL, "The file is neither a recognition nor a segmentation model.")
        if facts.kind == "recognition" and facts.line_type not in ("baselines", "bbox"):
            raise AppError(ErrorCode.INVALID_MODEL, "The recognition model does not say which line type it reads.")
        return facts

    def install_file(self, path: Path, request: InstallRequest, *, source: Source = "uploaded") -> dict[str, Any]:
        """Install a file from the host's disk (the operator's command line)."""
        if not path.is_file():
            raise AppError(ErrorCode.INVALID_MODEL, f"{path} is not a file.")
        with self._staging.copy_of(path) as staged:
            return self.install_staged(staged, request, source=source, extra={"file": path.name})

    def install_from_repository(
        self,
        doi: str,
        repository: ModelRepository,
        *,
        name: str | None = None,
        replace: bool = False,
        make_default: bool = False,
    ) -> dict[str, Any]:
        """Download record ``doi`` from kraken's model repository and install its model file.

        Without a name, the model is named after its file (``german_handwriting.mlmodel`` →
        ``german-handwriting``). Raises ``RepositoryUnavailableError`` without network.
        """
        if name is not None:
            model_rules.check_model_name(name)  # refuse a bad name before downloading anything
        download_dir = self.store.staging_dir / f"{uuid.uuid4().hex}.download"
        download_dir.mkdir()
        try:
            downloaded = repository.download(doi, download_dir, self.max_bytes)
            request = InstallRequest(
                name=name or slug_from_filename(downloaded.path.name), replace=replace, make_default=make_default
            )
            extra: dict[str, Any] = {"doi": downloaded.doi, "file": downloaded.path.name}
            if downloaded.title:
                extra["title"] = downloaded.title
            with self._staging.copy_of(downloaded.path) as staged:
                return self.install_staged(staged, request, source="downloaded", extra=extra)
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)

    # --- choosing and removing -------------------------------------------------------------
    def set_default(self, name: str | None) -> dict[str, Any]:
        """Choose the default recognition model; ``None`` falls back to ``OCR_DEFAULT_MODEL``."""
        if name is not None:
            entry = self._inspected_entry(name)
            if entry.kind == "segmentation":
                raise AppError(
                    ErrorCode.WRONG_MODEL_KIND,
                    f"'{name}' is a segmentation model; only a recognition model can be the default.",
                )
            if entry.kind != "recognition":
                raise AppError(
                    ErrorCode.INVALID_MODEL,
                    f"'{name}' cannot be used: {entry.problem or 'what kind of model it is is unknown'}.",
                )
        self.store.set_default(name)
        log.info("default recognition model is now %s", name or "(OCR_DEFAULT_MODEL)")
        return {"name": self.store.default_model}

    def set_segmentation(self, name: str | None) -> dict[str, Any]:
        """Choose the segmentation model of ``/ocr``; ``None`` goes back to ``OCR_SEGMENTATION_MODEL``
        (or the packaged model). The workers load it with the next document: no restart."""
        if name is not None:
            entry = self._inspected_entry(name)
            if entry.problem:
                raise AppError(ErrorCode.INVALID_MODEL, f"'{name}' cannot be used: {entry.problem}.")
            if entry.kind != "segmentation":
                what = f"a {entry.kind} model" if entry.kind else "a model of unknown kind"
                raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is {what}, not a segmentation model.")
        self.store.set_segmentation(name)
        current = self.store.segmentation_name
        log.info("segmentation model of OCR is now %s", current)
        return {"name": current, "chosen": self.store.chosen_segmentation}

    def remove(self, name: str) -> None:
        """Remove ``name``. Documents being read with it finish with their pinned copy of its file."""
        self.store.remove(model_rules.known_model_name(name), in_use=self._models_in_use())
