"""What routes get injected: the app's services and a database session per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from backend.db import Database
from backend.metrics import Metrics
from backend.settings import Settings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything one app instance shares between requests; built once by ``create_app``."""

    settings: Settings
    db: Database
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = utc_now


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session per request; service functions commit what they change."""
    with services.db.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
