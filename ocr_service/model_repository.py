"""kraken's public model repository, as the store sees it: DOIs, downloads and what can go wrong.

The client that talks to the repository (with kraken's own code) lives in
:mod:`ocr_service.engine.repository`; everything here is plain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ocr_service.model_ref import COREML_SUFFIX, SAFETENSORS_SUFFIX


def slug_from_filename(filename: str) -> str:
    """A model name from a file name: ``german_handwriting.mlmodel`` → ``german-handwriting``."""
    stem = filename.rsplit("/", 1)[-1]
    for suffix in (SAFETENSORS_SUFFIX, COREML_SUFFIX):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:64].strip("-")


DOI_PATTERN = re.compile(r"^(?:doi:|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)


def parse_doi(text: str) -> str | None:
    match = DOI_PATTERN.match(text.strip())
    return match.group(1) if match else None


class RepositoryUnavailableError(Exception):
    """The model repository cannot be reached (no network, DNS, or the repository is down)."""


@dataclass(frozen=True)
class DownloadedModel:
    path: Path
    doi: str
    title: str | None = None


class ModelRepository(Protocol):
    def download(self, doi: str, target_dir: Path, max_bytes: int) -> DownloadedModel:
        """Fetch the model file of record ``doi`` into ``target_dir`` (at most ``max_bytes``)."""
        ...
