"""Typed dependencies: the routes ask for what they need, tests build their own app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from ocr_service.metrics import ServiceMetrics
from ocr_service.model_inspection import ModelChecker
from ocr_service.ocr import OcrService
from ocr_service.pool import WorkerPool
from ocr_service.settings import Settings
from ocr_service.store import ModelStore
from ocr_service.training.service import TrainingService


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    pool: WorkerPool
    ocr: OcrService
    startup_error: str | None = None
    # Names of models a running training job reads or writes (set by the training side),
    # so that model management never removes a model from under a job.
    models_in_use: Callable[[], set[str]] = field(default=set)
    # Training jobs (POST /train, /segtrain); None where an app is built without them.
    training: TrainingService | None = None
    # Loads candidate model files one at a time (uploads, hand-placed files, trained models).
    model_checker: ModelChecker | None = None
    # Served on the management port (create_management_app).
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
