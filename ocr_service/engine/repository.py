"""kraken's model repository (Zenodo), reached through kraken's and htrmopo's own code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import COREML_SUFFIX, SAFETENSORS_SUFFIX
from ocr_service.model_repository import DownloadedModel, RepositoryUnavailableError


class _DownloadTooLargeError(Exception):
    pass


class KrakenRepository:
    """kraken's model repository (Zenodo) through ``kraken.repo`` and htrmopo, as ``kraken get`` does.

    ``describe`` and ``fetch`` default to ``kraken.repo.get_description`` and
    ``htrmopo.get_model``; tests pass stand-ins.
    """

    def __init__(
        self,
        describe: Callable[..., Any] | None = None,
        fetch: Callable[..., Any] | None = None,
    ) -> None:
        self._describe = describe
        self._fetch = fetch

    def download(self, doi: str, target_dir: Path, max_bytes: int) -> DownloadedModel:
        import requests

        describe = self._describe
        if describe is None:
            from kraken.repo import get_description

            describe = get_description
        fetch = self._fetch
        if fetch is None:
            from htrmopo import get_model

            fetch = get_model
        received = 0

        def bounded(total: int, advance: int) -> None:
            nonlocal received
            received += advance
            if total > max_bytes or received > max_bytes:
                raise _DownloadTooLargeError

        try:
            record = describe(doi, filter_fn=_is_kraken_record)
            fetch(doi, path=target_dir, callback=bounded)
        except _DownloadTooLargeError as exc:
            raise AppError(
                ErrorCode.MODEL_TOO_LARGE,
                f"The model record {doi} is larger than the limit of {max_bytes / 1024 / 1024:g} MB "
                "(OCR_MAX_MODEL_BYTES).",
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RepositoryUnavailableError(
                f"kraken's model repository (zenodo.org) cannot be reached from this host: there is no network "
                f"connection ({type(exc).__name__}). Download the model on a machine with network and install "
                "the file instead."
            ) from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (404, 410):
                raise AppError(ErrorCode.MODEL_NOT_FOUND, f"kraken's model repository has no record {doi}.") from exc
            raise RepositoryUnavailableError(
                f"kraken's model repository answered with an error (HTTP {status}); try again later."
            ) from exc
        except ValueError as exc:
            # kraken.repo / htrmopo: "not a valid DOI", "exists but is not a valid kraken record"
            raise AppError(ErrorCode.INVALID_MODEL, f"{doi} cannot be installed: {exc}") from exc
        candidates = sorted(
            p for p in target_dir.iterdir() if p.is_file() and p.suffix in (SAFETENSORS_SUFFIX, COREML_SUFFIX)
        )
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise AppError(
                ErrorCode.INVALID_MODEL,
                f"The record {doi} should hold exactly one .mlmodel or .safetensors file; it holds: {found}.",
            )
        title = getattr(record, "summary", None) or getattr(record, "title", None)
        return DownloadedModel(path=candidates[0], doi=doi, title=str(title) if title else None)


def _is_kraken_record(record: Any) -> bool:
    # the same test as `kraken get`
    return getattr(record, "software_name", None) == "kraken" or "kraken_pytorch" in (
        getattr(record, "keywords", None) or []
    )
