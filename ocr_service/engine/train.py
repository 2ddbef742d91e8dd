"""kraken's trainers, driven in-process inside the trainer process (``ocr_service.training.runner``).

The only module touching kraken's training API (7.1.x: ``kraken.train`` and ``kraken.configs``).
We use the Python classes rather than ``ketos`` so that a Lightning callback can report each
epoch (and a heartbeat per batch for the watchdog) and stop a run whose loss became NaN,
and so that we, not ketos, choose and convert the best checkpoint. Isolation comes from the
process it runs in, not from the CLI.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocr_service.engine.device import parse_device

log = logging.getLogger(__name__)

Kind = Literal["recognition", "segmentation"]
Event = dict[str, Any]

# Small enough for a CPU, large enough for a page's lines; what kraken's blla uses, at our height.
SEGMENTATION_SPEC = (
    "[1,{height},0,3 Cr7,7,64,2,2 Gn32 Cr3,3,128,2,2 Gn32 Cr3,3,128 Gn32 Cr3,3,256 Gn32 "
    "Cr3,3,256 Gn32 Lbx32 Lby32 Cr1,1,32 Gn32 Lby32 Lbx32]"
)
_SPEC_INPUT = re.compile(r"^\[\s*(\d+),(\d+),(\d+),(\d+)\s")


def spec_input_height(spec: str) -> int | None:
    """The input height a VGSL spec declares (``[1,H,W,C ...]``), or None if it declares none."""
    match = _SPEC_INPUT.match(spec)
    return int(match.group(2)) if match else None


@dataclass
class TrainingPlan:
    """Everything the trainer process needs; written as JSON by the service, read by the runner."""

    kind: Kind
    data_format: Literal["xml", "path"]
    training_files: list[str]
    output_dir: str
    epochs: int
    threads: int
    base_model: str | None = None
    spec: str | None = None
    learning_rate: float | None = None
    early_stopping: bool = False
    lag: int = 10
    partition: float = 0.9
    heartbeat_s: float = 5.0
    # segmentation: pages to count lines on with the trained model ("zero lines" = did not learn)
    check_images: list[str] = field(default_factory=list)
    # OCR_DEVICE: where the trainer runs ("cpu", "cuda:N").
    device: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingPlan:
        return cls(**data)


def _progress_callback(emit: Callable[[Event], None], heartbeat_s: float) -> Any:
    """A Lightning callback that reports epochs and heartbeats, and stops on a NaN loss.

    Defined on call: Lightning is imported only inside the trainer process.
    """
    from lightning.pytorch.callbacks import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.last_beat = 0.0

        def _beat(self, stage: str) -> None:
            now = time.monotonic()
            if now - self.last_beat >= heartbeat_s:
                self.last_beat = now
                emit({"type": "heartbeat", "stage": stage})

        def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
            self._beat("train")

        def on_validation_batch_end(self, trainer: Any, *_: Any) -> None:
            self._beat("validate")

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
            loss = metrics.get("train_loss_epoch", metrics.get("train_loss"))
            event: Event = {
                "type": "epoch",
                "epoch": trainer.current_epoch + 1,
                "score": metrics.get("val_metric"),
                "loss": loss,
                "valAccuracy": metrics.get("val_accuracy"),
                "baselineF1": metrics.get("val_bl_f1"),
            }
            if loss is not None and not math.isfinite(loss):
                event["nanLoss"] = True
                trainer.should_stop = True
            emit(event)
            self.last_beat = time.monotonic()

    return Progress()


def _number(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None


def _checkpoint_callback(output_dir: str) -> Any:
    from lightning.pytorch.callbacks import ModelCheckpoint

    # kraken's own naming, so the best checkpoint can be chosen from the file names.
    return ModelCheckpoint(
        dirpath=output_dir,
        save_top_k=10,
        monitor="val_metric",
        mode="max",
        auto_insert_metric_name=False,
        filename="checkpoint_{epoch:02d}-{val_metric:.4f}",
    )


def trainer_device(device: str) -> dict[str, Any]:
    """Lightning's flags for ``device``: one CPU process, or the one GPU named."""
    where = parse_device(device)
    return {"accelerator": where.accelerator, "devices": 1 if where.index is None else [where.index]}


def _trainer(plan: TrainingPlan, emit: Callable[[Event], None], **extra: Any) -> Any:
    from kraken.train import KrakenTrainer

    return KrakenTrainer(
        **trainer_device(plan.device),
        precision="32-true",
        # kraken's trainer defaults are 5/100 epochs: both are set explicitly. min_epochs stays 1
        # so that a NaN loss can stop a fixed-length run at once (Lightning holds should_stop
        # back until min_epochs); a fixed run has no early-stopping callback to end it sooner.
        max_epochs=plan.epochs,
        min_epochs=1,
        enable_progress_bar=False,
        enable_summary=False,
        callbacks=[_checkpoint_callback(plan.output_dir), _progress_callback(emit, plan.heartbeat_s)],
        num_sanity_val_steps=0,
        val_check_interval=1.0,
        **extra,
    )


def _common_config(plan: TrainingPlan) -> dict[str, Any]:
    where = parse_device(plan.device)
    values: dict[str, Any] = {
        # The trainer places the model (trainer_device); the config says the same, for kraken's
        # own uses of it (its inference on the trained model).
        "accelerator": where.accelerator,
        "device": where.lightning_devices,
        "epochs": plan.epochs,
        "checkpoint_path": plan.output_dir,
        "quit": "early" if plan.early_stopping else "fixed",
        "lag": plan.lag,
        "min_epochs": 1,
    }
    if plan.learning_rate is not None:
        values["lrate"] = plan.learning_rate
    if plan.spec:
        values["spec"] = plan.spec
    return values


def fit(plan: TrainingPlan, emit: Callable[[Event], None]) -> None:
    """Train as the plan says; checkpoints land in ``plan.output_dir``. Blocks until training ends."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(plan.threads)
    with warnings.catch_warnings(), threadpool_limits(limits=plan.threads):
        warnings.simplefilter("ignore")
        if plan.kind == "recognition":
            _fit_recognition(plan, emit)
        else:
            _fit_segmentation(plan, emit)


def _fit_recognition(plan: TrainingPlan, emit: Callable[[Event], None]) -> None:
    from kraken.configs import VGSLRecognitionTrainingConfig, VGSLRecognitionTrainingDataConfig
    from kraken.train import VGSLRecognitionDataModule, VGSLRecognitionModel

    config = _common_config(plan)
    # 'union' grows the codec when the data has characters the base lacks; 'add'/'both' crash in 7.1.1.
    model_config = VGSLRecognitionTrainingConfig(resize="union", **config)
    data_config = VGSLRecognitionTrainingDataConfig(
        training_data=plan.training_files,
        format_type=plan.data_format,
        partition=plan.partition,
        # Data loading in the trainer process itself: one process to watch, measure and kill.
        num_workers=0,
    )
    data = VGSLRecognitionDataModule(data_config)
    _fit(_trainer(plan, emit), VGSLRecognitionModel, model_config, data, plan.base_model)


def _fit_segmentation(plan: TrainingPlan, emit: Callable[[Event], None]) -> None:
    from kraken.configs import BLLASegmentationTrainingConfig, BLLASegmentationTrainingDataConfig
    from kraken.train import BLLASegmentationDataModule, BLLASegmentationModel

    config = _common_config(plan)
    model_config = BLLASegmentationTrainingConfig(resize="union", **config)
    data_config = BLLASegmentationTrainingDataConfig(
        training_data=plan.training_files,
        format_type="xml",
        partition=plan.partition,
        num_workers=0,
    )
    data = BLLASegmentationDataModule(data_config)
    _fit(
        _trainer(plan, emit, use_distributed_sampler=False), BLLASegmentationModel, model_config, data, plan.base_model
    )


def _fit(trainer: Any, model_class: Any, model_config: Any, data: Any, base_model: str | None) -> None:
    """Fine-tune ``base_model``'s weights, or train a new network from ``model_config``."""
    with trainer.init_module(empty_init=base_model is None):
        if base_model:
            model = model_class.load_from_weights(base_model, config=model_config)
        else:
            model = model_class(model_config)
    trainer.fit(model, data)


def convert_checkpoint(checkpoint: Path, target: Path) -> Path:
    """Write the network of one of *our own* checkpoints as a safetensors model file.

    kraken reads the checkpoint with ``weights_only=True`` and an allow-list of its classes;
    still, only checkpoints our trainer wrote into the job's folder are ever passed here.
    """
    from kraken.models.convert import convert_models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = convert_models([checkpoint], target, weights_format="safetensors")
    return Path(written)


def count_lines(model_file: Path, images: list[Path], threads: int, device: str = "cpu") -> int:
    """Lines a segmentation model finds on ``images`` (0 means it has learned nothing usable)."""
    import torch
    from kraken.configs import SegmentationInferenceConfig
    from kraken.tasks import SegmentationTaskModel
    from PIL import Image

    torch.set_num_threads(threads)
    where = parse_device(device)
    config = SegmentationInferenceConfig(accelerator=where.accelerator, device=where.lightning_devices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SegmentationTaskModel.load_model(model_file)
        total = 0
        for path in images:
            with Image.open(path) as image:
                seg = model.predict(image.convert("RGB"), config)
            total += len(seg.lines)
    return total


def expected_training_errors() -> tuple[type[Exception], ...]:
    """Errors kraken raises for bad data or a base model that does not fit it (the admin can act on these)."""
    from kraken.lib.exceptions import KrakenEncodeException, KrakenInputException

    return (ValueError, KrakenInputException, KrakenEncodeException)
