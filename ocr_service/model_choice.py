"""Which models ``/ocr`` reads with: the default recognition model and the segmentation model.

An admin's choice (kept in ``.state.json``) wins over the operator's settings
(``OCR_DEFAULT_MODEL``, ``OCR_SEGMENTATION_MODEL``); the packaged ``blla`` is the last resort.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocr_service import model_rules
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_entry import describes, read_json, write_json
from ocr_service.model_ref import PACKAGED_SEGMENTATION, ModelRef, packaged_segmentation_model
from ocr_service.settings import MODEL_NAME_PATTERN

if TYPE_CHECKING:
    from ocr_service.store import ModelStore

log = logging.getLogger(__name__)


class ModelChoices:
    def __init__(self, store: ModelStore, configured_default: str | None) -> None:
        self._store = store
        self._configured_default = configured_default
        self._state_file = store.root / ".state.json"

    def _state(self) -> dict[str, Any]:
        return read_json(self._state_file) or {}

    @property
    def default_model(self) -> str | None:
        """The chosen default (through the API, kept on disk) wins over ``OCR_DEFAULT_MODEL``."""
        chosen = self._state().get("defaultModel")
        return chosen if isinstance(chosen, str) else self._configured_default

    @property
    def chosen_segmentation(self) -> str | None:
        chosen = self._state().get("segmentationModel")
        return chosen if isinstance(chosen, str) else None

    def choose(self, key: str, name: str | None, kind: str) -> None:
        """Record ``name`` as the ``key`` model (``None``: back to the operator's setting)."""
        store = self._store
        with store.locked():
            if name is not None and store.file_of(name) is None and name != PACKAGED_SEGMENTATION:
                raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.")
            # The caller checked the kind; a new version installed meanwhile is checked here.
            if name is not None:
                model_rules.check_kind(name, (store.meta(name) or {}).get("kind"), kind)
            state = self._state()
            state[key] = name
            write_json(self._state_file, state)

    def configured_segmentation_file(self) -> Path | None:
        """The current file of ``OCR_SEGMENTATION_MODEL``. When it lies in the store, it is found
        by name: a new version trained or installed under that name may come in the other format
        (``house.mlmodel`` → ``house.safetensors``), and is still the configured model."""
        configured = self._store.configured_segmentation
        if configured is None:
            return None
        if configured.parent == self._store.root and MODEL_NAME_PATTERN.fullmatch(configured.stem):
            return self._store.file_of(configured.stem) or configured
        return configured

    def segmentation_model(self, *, check: bool = True, warn: bool = True) -> ModelRef:
        """The segmentation model ``/ocr`` should use now, with its file's version.

        The admin's choice wins, then ``OCR_SEGMENTATION_MODEL``, then the packaged model.
        With ``check``, a chosen model the store knows to be unusable is an error, not a
        silent fallback.
        """
        store = self._store
        chosen = self.chosen_segmentation
        if chosen is not None:
            path = store.file_of(chosen) if MODEL_NAME_PATTERN.fullmatch(chosen) else None
            if path is not None:
                meta = store.meta(chosen)
                if check and meta and describes(meta, path.stat()):
                    problem = meta.get("problem") or (
                        f"it is a {meta['kind']} model" if meta.get("kind") not in (None, "segmentation") else None
                    )
                    if problem:
                        raise AppError(
                            ErrorCode.SEGMENTATION_MODEL_UNUSABLE,
                            f"OCR cannot run: the chosen segmentation model '{chosen}' cannot be used ({problem}). "
                            "An admin must choose another segmentation model (PUT /models/segmentation).",
                        )
                return store.ref(chosen, path)
            if chosen == PACKAGED_SEGMENTATION:
                return ModelRef.of_file(PACKAGED_SEGMENTATION, packaged_segmentation_model())
            if warn:
                log.warning("the chosen segmentation model '%s' is not in the store; using the configured one", chosen)
        configured = self.configured_segmentation_file()
        if configured is not None:
            if configured.is_file():
                if configured.parent == store.root:
                    return store.ref(configured.stem, configured)
                return ModelRef.of_file(configured.stem, configured)
            if warn:
                log.warning("OCR_SEGMENTATION_MODEL %s is missing; using the packaged segmentation model", configured)
        return ModelRef.of_file(PACKAGED_SEGMENTATION, packaged_segmentation_model())

    def role_of(self, name: str) -> tuple[str, str] | None:
        """The kind of model ``name`` must stay, and why: the default reads, the segmentation model cuts lines."""
        if name == self.default_model:
            return "recognition", "the default recognition model"
        configured = self._store.configured_segmentation
        if name == self.chosen_segmentation or (
            configured is not None and configured.parent == self._store.root and configured.stem == name
        ):
            return "segmentation", "the segmentation model OCR uses"
        return None

    def chosen_as(self, name: str) -> str | None:
        """What an admin's choice makes of ``name`` (which keeps it from being removed), if anything."""
        if name == self.default_model:
            return "the default model; choose another default"
        if name == self.chosen_segmentation:
            return "the segmentation model OCR uses; choose another one (PUT /models/segmentation)"
        return None

    def recognition_model(self, name: str | None) -> ModelRef | None:
        """The model ``/ocr`` should read with: the named one, else the default, else none."""
        store = self._store
        if name is None:
            name = self.default_model
            if name is None or store.file_of(name) is None:
                if name is not None:
                    log.warning("the default model '%s' is not in the store; reading without a model", name)
                return None
        else:
            model_rules.known_model_name(name, ErrorCode.UNKNOWN_MODEL)
        if name == PACKAGED_SEGMENTATION:
            raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is a segmentation model; choose a recognition model.")
        path = store.file_of(name)
        if path is None:
            raise AppError(
                ErrorCode.UNKNOWN_MODEL,
                f"There is no model named '{name}'. Installed: {', '.join(store.names()) or 'none'}.",
            )
        meta = store.meta(name)
        ref = store.ref(name, path)
        if meta and describes(meta, path.stat()) and meta.get("problem"):
            raise AppError(ErrorCode.INVALID_MODEL, f"The model file of '{name}' cannot be used: {meta['problem']}")
        if meta and meta.get("kind") == "segmentation":
            raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is a segmentation model; choose a recognition model.")
        return ref
