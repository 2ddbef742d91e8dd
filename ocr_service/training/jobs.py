"""Training jobs and their state on disk: one folder per job, ``job.json`` written atomically.

The state outlives the process: after a restart every job that was QUEUED or RUNNING is
reported FAILED ("interrupted"), never RUNNING forever.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def new_job_id() -> str:
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.match(job_id))


@dataclass
class EpochMetrics:
    epoch: int
    accuracy: float | None
    cer: float | None
    loss: float | None = None


@dataclass
class Job:
    job_id: str
    kind: str
    model_name: str
    base_model: str | None
    status: JobStatus = JobStatus.QUEUED
    epoch: int = 0
    epochs: int = 0
    metrics: list[EpochMetrics] = field(default_factory=list)
    accuracy: float | None = None
    cer: float | None = None
    model_version: int | None = None
    error: str | None = None
    info: list[str] = field(default_factory=list)
    created: str = field(default_factory=now_iso)
    started: str | None = None
    finished: str | None = None
    trainer_pid: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "kind": self.kind,
            "status": self.status.value,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "metrics": [{"epoch": m.epoch, "accuracy": m.accuracy, "cer": m.cer} for m in self.metrics],
            "cer": self.cer,
            "accuracy": self.accuracy,
            "modelName": self.model_name,
            "modelVersion": self.model_version,
            "baseModel": self.base_model,
            "error": self.error,
            "info": list(self.info),
            "createdAt": self.created,
            "startedAt": self.started,
            "finishedAt": self.finished,
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        values = dict(data)
        values["status"] = JobStatus(values["status"])
        values["metrics"] = [EpochMetrics(**m) for m in values.get("metrics", [])]
        return cls(**values)


class JobStore:
    """Job folders under ``root``; each holds ``job.json`` and the job's working files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def dir_of(self, job_id: str) -> Path:
        if not valid_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def save(self, job: Job) -> None:
        directory = self.dir_of(job.job_id)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / JOB_FILE, job.to_json())

    def load(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        try:
            data = json.loads((self.root / job_id / JOB_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("the state of training job %s cannot be read: %s", job_id, exc)
            return None
        try:
            return Job.from_json(data)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("the state of training job %s is not a job: %s", job_id, exc)
            return None

    def all(self) -> list[Job]:
        jobs = []
        for directory in self.root.iterdir():
            if directory.is_dir() and valid_job_id(directory.name):
                job = self.load(directory.name)
                if job is not None:
                    jobs.append(job)
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def prune(self, keep: int, orphan_age_s: float = 24 * 3600) -> list[str]:
        """Delete the folders of finished jobs beyond the ``keep`` that ended last, and folders
        without a job state older than ``orphan_age_s`` (an upload cut off by a crash).
        Unfinished jobs and folders with a state that cannot be read stay."""
        finished = [job for job in self.all() if job.status.finished]
        # The state is written last when a job ends: its mtime orders jobs that ended in the
        # same second (the timestamps have one-second resolution).
        finished.sort(key=lambda j: (j.finished or j.created, self._state_mtime_ns(j.job_id)), reverse=True)
        removed = [job.job_id for job in finished[keep:]]
        cutoff = time.time() - orphan_age_s
        for directory in self.root.iterdir():
            if not valid_job_id(directory.name) or directory.is_symlink() or not directory.is_dir():
                continue
            try:
                orphan = not (directory / JOB_FILE).exists() and directory.stat().st_mtime < cutoff
            except OSError:
                continue
            if orphan:
                removed.append(directory.name)
        for job_id in removed:
            shutil.rmtree(self.dir_of(job_id), ignore_errors=True)
        if removed:
            log.info("deleted %d old training job folder(s)", len(removed))
        return removed

    def _state_mtime_ns(self, job_id: str) -> int:
        try:
            return (self.dir_of(job_id) / JOB_FILE).stat().st_mtime_ns
        except OSError:
            return 0
