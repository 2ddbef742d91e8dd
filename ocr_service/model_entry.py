"""What the store says about one model: its entry as listed, and the description kept beside it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ocr_service.model_ref import PACKAGED_SEGMENTATION, ModelFacts

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
    # A hand-placed file the service has not inspected yet: its kind and facts are unknown
    # until the background inspection (one file at a time) has loaded it.
    checking: bool = False

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
            "checking": self.checking,
        }

    @classmethod
    def from_meta(cls, name: str, path: Path, stat: os.stat_result, meta: dict[str, Any]) -> ModelEntry:
        return cls(
            name=name,
            kind=meta.get("kind"),
            line_type=meta.get("lineType"),
            source=meta.get("source", "local"),
            version=int(meta.get("version", 1)),
            created=meta.get("created") or iso_time(stat.st_mtime),
            size=stat.st_size,
            alphabet_size=meta.get("alphabetSize"),
            input_height=meta.get("inputHeight"),
            accuracy=meta.get("accuracy"),
            cer=meta.get("cer"),
            file=path.name,
            extra=meta.get("extra", {}),
            problem=meta.get("problem"),
        )

    @classmethod
    def packaged(cls, path: Path) -> ModelEntry:
        """The segmentation model inside the kraken wheel: listed, never copied."""
        stat = path.stat()
        return cls(
            name=PACKAGED_SEGMENTATION,
            kind="segmentation",
            line_type=None,
            source="packaged",
            version=1,
            created=iso_time(stat.st_mtime),
            size=stat.st_size,
            input_height=1800,
            file=str(path),
        )


def iso_time(timestamp: float | None = None) -> str:
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="seconds")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def facts_meta(facts: ModelFacts) -> dict[str, Any]:
    return {
        "kind": facts.kind,
        "lineType": facts.line_type,
        "alphabetSize": facts.alphabet_size,
        "inputHeight": facts.input_height,
        "accuracy": facts.accuracy,
    }


def same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_mtime_ns == b.st_mtime_ns and a.st_size == b.st_size


def describes(meta: dict[str, Any], stat: os.stat_result) -> bool:
    """Whether ``meta`` was written for the file as it is now (same mtime and size)."""
    return meta.get("fileMtimeNs") == stat.st_mtime_ns and meta.get("size") == stat.st_size


def next_local_version(old: dict[str, Any] | None) -> int:
    """The version a file changed by hand gets: one more than the description it outdated."""
    return int(old.get("version", 0)) + 1 if old else 1
