"""Which model a training run starts from, and what the admin is told about that choice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ocr_service import model_rules
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import PACKAGED_SEGMENTATION, ModelFacts, ModelFileError, packaged_segmentation_model
from ocr_service.store import ModelStore
from ocr_service.training.datasets import FEW_LINES, TrainingData
from ocr_service.training.requests import TrainingRequest

log = logging.getLogger(__name__)


class JobFailedError(AppError):
    """A problem found after the job was accepted: it fails the job with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_TRAINING_DATA, message)


@dataclass(frozen=True)
class BaseDecision:
    """Which model a run starts from (None: from scratch) and what the admin is told about it."""

    name: str | None
    path: Path | None
    note: str


@dataclass
class BaseChoice:
    name: str | None = None
    path: Path | None = None
    notes: list[str] = field(default_factory=list)
    alphabet_size: int | None = None  # of a recognition base, to report how much the alphabet grew


def choose_segmentation_base(
    candidate: tuple[str, Path] | None,
    training_height: int,
    height_of: Callable[[str, Path], int | None],
) -> BaseDecision:
    """Fine-tune ``candidate`` only if its input height is the training height.

    kraken silently ignores ``-s``/the spec when weights are loaded, so a base model of
    another height (blla: 1800 px) cannot be trained at ``training_height``: such a run
    starts from scratch at that height instead, and says so.
    """
    scratch = f"training a new segmentation model from scratch at {training_height} px"
    if candidate is None:
        return BaseDecision(None, None, f"No segmentation base model: {scratch}.")
    name, path = candidate
    try:
        height = height_of(name, path)
    except (ModelFileError, AppError, OSError) as exc:
        log.warning("the input height of segmentation model '%s' cannot be read (%s); %s", name, exc, scratch)
        return BaseDecision(
            None, None, f"The input height of base model '{name}' could not be read ({exc}); {scratch}."
        )
    if height is None:
        log.warning("segmentation model '%s' declares no input height; %s", name, scratch)
        return BaseDecision(None, None, f"Base model '{name}' declares no input height; {scratch}.")
    if height != training_height:
        return BaseDecision(
            None,
            None,
            f"Base model '{name}' reads pages at {height} px, but segmentation is trained at {training_height} px "
            f"and kraken cannot change a loaded model's input height: {scratch}.",
        )
    return BaseDecision(name, path, f"Fine-tuning segmentation model '{name}' ({height} px).")


class BaseModelChooser:
    def __init__(self, store: ModelStore, segtrain_height: int, validate: Callable[[Path], ModelFacts]) -> None:
        self.store = store
        self.segtrain_height = segtrain_height
        self._validate = validate

    def choose(self, request: TrainingRequest, data: TrainingData) -> BaseChoice:
        if request.kind == "segmentation":
            decision = choose_segmentation_base(
                None if request.spec else self._segmentation_candidate(request),
                self.segtrain_height,
                self._input_height,
            )
            log.info("training %s: %s", request.model_name, decision.note)
            return BaseChoice(decision.name, decision.path, [decision.note])
        return self._recognition_base(request, data)

    def _recognition_base(self, request: TrainingRequest, data: TrainingData) -> BaseChoice:
        choice = BaseChoice()
        name = request.base_model
        if name is None and not request.spec and self.store.file_of(request.model_name) is not None:
            name = request.model_name
            choice.notes.append(f"Continuing training of the installed model '{name}'.")
        if name is None:
            choice.notes.append("Training a new recognition model from scratch.")
            if data.lines < FEW_LINES:
                choice.notes.append(
                    f"Only {data.lines} lines: a model trained from scratch on few lines reads poorly; "
                    "fine-tuning a base model (baseModel) usually works much better."
                )
            return choice
        path = self.store.file_of(name)
        if path is None:
            raise JobFailedError(f"the base model '{name}' is no longer in the store")
        entry = self.store.entry(name)
        kind, line_type, alphabet_size = entry.kind, entry.line_type, entry.alphabet_size
        if entry.checking:
            # Placed by hand and not inspected yet: learn now what it is (this is the job's own
            # thread, and the checker runs one model at a time) rather than train on a guess.
            try:
                facts = self._validate(path)
            except ModelFileError as exc:
                raise JobFailedError(f"the base model '{name}' cannot be loaded: {exc}") from exc
            kind, line_type, alphabet_size = facts.kind, facts.line_type, facts.alphabet_size
        try:
            model_rules.check_kind(name, kind, "recognition")
        except AppError as exc:
            raise JobFailedError(exc.message) from exc
        if line_type is not None and line_type != data.line_type:
            raise JobFailedError(
                f"base model '{name}' reads {line_type} lines but the data has {data.line_type} lines "
                "(line images are bbox lines, PAGE XML/ALTO lines are baselines); a model trained on mixed line "
                "types reads neither well"
            )
        if name != request.model_name or request.base_model:
            choice.notes.append(f"Fine-tuning recognition model '{name}'; new characters grow its alphabet.")
        choice.name, choice.path, choice.alphabet_size = name, path, alphabet_size
        return choice

    def _segmentation_candidate(self, request: TrainingRequest) -> tuple[str, Path] | None:
        """The base of a segmentation run: the named one, else the target itself, else the one /ocr uses."""
        if request.base_model is not None:
            return request.base_model, self._segmentation_file(request.base_model)
        existing = self.store.file_of(request.model_name)
        if existing is not None:
            return request.model_name, existing
        current = self.store.segmentation_model(check=False)
        return current.name, Path(current.path)

    def _segmentation_file(self, name: str) -> Path:
        path = self.store.file_of(name)
        if path is None and name == PACKAGED_SEGMENTATION:
            return packaged_segmentation_model()
        if path is None:
            raise JobFailedError(f"the base model '{name}' is no longer in the store")
        return path

    def _input_height(self, name: str, path: Path) -> int | None:
        if name == PACKAGED_SEGMENTATION and path == packaged_segmentation_model():
            return self.store.entry(PACKAGED_SEGMENTATION).input_height
        if path.parent == self.store.root and self.store.file_of(path.stem) == path:
            entry = self.store.entry(path.stem)
            # The store records why a hand-placed file it inspected cannot be used.
            if entry.problem:
                raise ModelFileError(entry.problem)
            try:
                model_rules.check_kind(name, entry.kind, "segmentation")
            except AppError as exc:
                raise JobFailedError(exc.message) from exc
            if entry.input_height is not None:
                return entry.input_height
        return self._validate(path).input_height
