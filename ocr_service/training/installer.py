"""The end of a run that exited cleanly: judge what it learned, check its model loads, install it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ocr_service.model_ref import ModelFacts, ModelFileError
from ocr_service.store import ModelStore
from ocr_service.training import runner
from ocr_service.training.jobs import Job
from ocr_service.training.verdict import convergence_problem, read_result


@dataclass(frozen=True)
class Outcome:
    """None for ``error``: the model is installed and the job is done."""

    error: str | None
    installed: bool = False


class TrainedModelInstaller:
    def __init__(self, store: ModelStore, validate: Callable[[Path], ModelFacts]) -> None:
        self.store = store
        self._validate = validate

    def conclude(
        self, job: Job, job_dir: Path, nan_loss: bool, base_alphabet_size: int | None, claim: Callable[[], bool]
    ) -> Outcome:
        """``claim()`` is asked right before installing (False: the job was cancelled meanwhile)."""
        result = read_result(job_dir / runner.RESULT_FILE)
        if result is None:
            return Outcome("the trainer ended without a result")
        problem = convergence_problem(job.kind, job.metrics, nan_loss, result)
        if problem is not None:
            return Outcome(f"did not converge: {problem}; no model was installed")
        model_file = (job_dir / runner.MODEL_FILE).resolve()
        if Path(str(result.get("modelFile"))).resolve() != model_file or not model_file.is_file():
            return Outcome("the trainer did not write the model file where it was expected")
        try:
            facts = self._validate(model_file)
        except ModelFileError as exc:
            return Outcome(f"the trained model cannot be loaded and was not installed: {exc}")
        if facts.kind != job.kind:
            return Outcome(f"the trainer produced a {facts.kind} model, not a {job.kind} model")
        if not claim():
            return Outcome(None, installed=False)
        accuracy = float(result["bestScore"])
        if base_alphabet_size is not None and facts.alphabet_size is not None:
            grown = facts.alphabet_size - base_alphabet_size
            if grown > 0:
                job.info.append(f"The alphabet grew by {grown} character(s) to {facts.alphabet_size}.")
        entry = self.store.install(
            model_file,
            job.model_name,
            facts,
            source="trained",
            replace=True,
            scores={"accuracy": round(accuracy, 6), "cer": round(1.0 - accuracy, 6)},
            extra={
                "jobId": job.job_id,
                "baseModel": job.base_model,
                "epochs": job.epoch,
                "bestEpoch": result.get("bestEpoch"),
                "metrics": [{"epoch": m.epoch, "accuracy": m.accuracy} for m in job.metrics],
            },
        )
        job.accuracy = round(accuracy, 6)
        job.cer = round(1.0 - accuracy, 6)
        job.model_version = entry.version
        if result.get("bestEpoch"):
            job.info.append(f"Installed the checkpoint of epoch {result['bestEpoch']} (best validation score).")
        return Outcome(None, installed=True)
