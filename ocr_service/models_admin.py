"""Bring your own model: receive, recognise, validate, install, describe, choose and remove.

Shared by the HTTP routes (``ocr_service/api/models.py``) and the operator's command line
(``ocr_service/cli.py``), so both refuse the same files for the same reasons.

Safety, in order: a candidate file is written only into the store's staging folder, under a
name of our own; its format is recognised from its bytes (never from its name) and only
kraken's pickle-free formats pass (safetensors, CoreML); kraken then loads it in a child
process with a time and memory limit (:func:`validate_model_file`); only then does the
store install it atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from ocr_service.engine.inspect import COREML_SUFFIX, SAFETENSORS_SUFFIX, ModelFacts, ModelFileError
from ocr_service.engine.validate import model_checker
from ocr_service.errors import AppError, ErrorCode
from ocr_service.settings import Settings
from ocr_service.store import PACKAGED_SEGMENTATION, ModelStore, Source, check_model_name

log = logging.getLogger(__name__)

# safetensors refuses headers over 100 MB itself; a model's header is a few kB.
_MAX_SAFETENSORS_HEADER = 100_000_000
_COPY_CHUNK = 1024 * 1024

# Magic numbers of files that are certainly no kraken model, with a plain description.
_FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (PyTorch .pt/.ckpt checkpoints are ZIP files)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x7fELF", "a program"),
    (b"#!", "a script"),
    (b"\x89HDF", "an HDF5 file (Keras)"),
    (b"\x93NUMPY", "a NumPy array"),
)


def sniff_model_format(path: Path) -> str:
    """The suffix of the model format ``path`` holds, judged by its bytes alone.

    Raises ``INVALID_MODEL`` for anything that is not safetensors or CoreML, in particular
    for pickles and ZIP files (PyTorch checkpoints): kraken loads ``.ckpt`` files with
    ``weights_only=False``, so such a file could run code.
    """
    size = path.stat().st_size
    if size == 0:
        raise AppError(ErrorCode.INVALID_MODEL, "The model file is empty.")
    with open(path, "rb") as handle:
        head = handle.read(16)
        # safetensors first: its 8-byte header length may well start with 0x80 (a header of
        # 2688 bytes is 80 0a 00 …), which a naive pickle check would mistake for a pickle.
        if _is_safetensors(handle, head, size):
            return SAFETENSORS_SUFFIX
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise AppError(
            ErrorCode.INVALID_MODEL,
            "The file is a Python pickle (a PyTorch checkpoint or .pt file). Pickles can run code "
            "when loaded and are never accepted; convert the model to .safetensors or .mlmodel.",
        )
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            raise AppError(
                ErrorCode.INVALID_MODEL,
                f"The file is {what}, not a kraken model. Only .safetensors and CoreML .mlmodel files are accepted.",
            )
    if _looks_like_coreml(head):
        return COREML_SUFFIX
    raise AppError(
        ErrorCode.INVALID_MODEL,
        "The file is neither a safetensors nor a CoreML (.mlmodel) model, the only formats accepted.",
    )


def _is_safetensors(handle: IO[bytes], head: bytes, size: int) -> bool:
    """safetensors: u64 little-endian header length, then that many bytes of a JSON object."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if not 2 <= header_len <= _MAX_SAFETENSORS_HEADER or 8 + header_len > size or head[8:9] != b"{":
        return False
    handle.seek(8)
    try:
        header = json.loads(handle.read(header_len))
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(header, dict):
        return False
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    return all(isinstance(t, dict) and {"dtype", "shape", "data_offsets"} <= t.keys() for t in tensors)


def _looks_like_coreml(head: bytes) -> bool:
    """A CoreML model is a protobuf ``Model`` message; coremltools writes field 1
    (``specificationVersion``, a varint: tag 0x08) first, or field 2 (``description``, tag
    0x12) when the version is 0. Anything else is refused before a parser ever sees it."""
    if not head:
        return False
    if head[0] == 0x12:
        return True
    if head[0] != 0x08:
        return False
    # the varint of the specification version: at most a few bytes, then the next field's tag
    for i, byte in enumerate(head[1:6], start=1):
        if not byte & 0x80:
            next_tag = head[i + 1] if i + 1 < len(head) else None
            return next_tag is None or (next_tag & 0x07) in (0, 1, 2, 5)
    return False


def slug_from_filename(filename: str) -> str:
    """A model name from a file name: ``german_handwriting.mlmodel`` → ``german-handwriting``."""
    stem = filename.rsplit("/", 1)[-1]
    for suffix in (SAFETENSORS_SUFFIX, COREML_SUFFIX):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:64].strip("-")


# --- kraken's public model repository --------------------------------------------------

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


# --- receiving a file --------------------------------------------------------------------


class StagedFile:
    """A candidate model arriving in the store's staging folder, cut off at ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._handle: IO[bytes] | None = open(path, "xb")  # closed in close()

    def write(self, data: bytes) -> None:
        if self._handle is None:
            raise ValueError("the staged file is closed")
        self.size += len(data)
        if self.size > self.max_bytes:
            raise AppError(
                ErrorCode.MODEL_TOO_LARGE,
                f"The model file is larger than the limit of {self.max_bytes / 1024 / 1024:g} MB.",
                details={"maxBytes": self.max_bytes},
            )
        self._handle.write(data)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass(frozen=True)
class InstallRequest:
    name: str
    replace: bool = False
    make_default: bool = False


class ModelAdmin:
    """What an admin or operator may do with the model store, with every check in one place."""

    def __init__(
        self,
        store: ModelStore,
        *,
        max_bytes: int,
        validate: Callable[[Path], ModelFacts],
        models_in_use: Callable[[], set[str]] = set,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._validate = validate
        self._models_in_use = models_in_use
        # Loading a model costs a child process with torch (1–2 GB): one at a time, so a
        # burst of uploads cannot take the machine's memory from the OCR workers.
        self._validating = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, store: ModelStore, models_in_use: Callable[[], set[str]] = set
    ) -> ModelAdmin:
        return cls(
            store,
            max_bytes=settings.max_model_bytes,
            validate=model_checker(settings),
            models_in_use=models_in_use,
        )

    # --- reading -------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        default, segmentation = self.store.default_model, self.store.segmentation_name
        return [entry.public(default, segmentation) for entry in self.store.entries()]

    def describe(self, name: str) -> dict[str, Any]:
        entry = self.store.entry(self._known_name(name))
        return entry.public(self.store.default_model, self.store.segmentation_name)

    def _known_name(self, name: str) -> str:
        try:
            return check_model_name(name)
        except AppError as exc:
            raise AppError(ErrorCode.MODEL_NOT_FOUND, f"There is no model named '{name}'.") from exc

    # --- receiving and installing -------------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[StagedFile]:
        """A fresh staging file in the store, named by us, removed whatever happens."""
        staged = StagedFile(self.store.staging_dir / f"{uuid.uuid4().hex}.part", self.max_bytes)
        try:
            yield staged
        finally:
            staged.close()
            staged.path.unlink(missing_ok=True)

    def install_staged(
        self,
        staged: StagedFile,
        request: InstallRequest,
        *,
        source: Source,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check and install a received file; it leaves the staging folder either way."""
        staged.close()
        name = check_model_name(request.name)
        if name == PACKAGED_SEGMENTATION:
            raise AppError(ErrorCode.MODEL_PROTECTED, f"'{name}' is the packaged segmentation model's name.")
        if not request.replace and self.store.file_of(name) is not None:
            raise AppError(
                ErrorCode.MODEL_EXISTS,
                f"A model named '{name}' exists already; send replace=true to install a new version.",
            )
        suffix = sniff_model_format(staged.path)
        candidate = staged.path.with_name(f"{staged.path.stem}{suffix}")
        os.replace(staged.path, candidate)
        try:
            facts = self._check_loads(candidate)
            if request.make_default and facts.kind != "recognition":
                raise AppError(
                    ErrorCode.WRONG_MODEL_KIND,
                    f"This is a {facts.kind} model; only a recognition model can be the default.",
                )
            self.store.install(candidate, name, facts, source=source, replace=request.replace, extra=extra, move=True)
        finally:
            candidate.unlink(missing_ok=True)
        if request.make_default:
            self.store.set_default(name)
        return self.describe(name)

    def _check_loads(self, candidate: Path) -> ModelFacts:
        with self._validating:
            try:
                facts = self._validate(candidate)
            except ModelFileError as exc:
                raise AppError(ErrorCode.INVALID_MODEL, f"kraken cannot use this file: {exc}") from exc
        if facts.kind not in ("recognition", "segmentation"):
            raise AppError(ErrorCode.INVALID_MODEL, "The file is neither a recognition nor a segmentation model.")
        if facts.kind == "recognition" and facts.line_type not in ("baselines", "bbox"):
            raise AppError(ErrorCode.INVALID_MODEL, "The recognition model does not say which line type it reads.")
        return facts

    def install_file(self, path: Path, request: InstallRequest, *, source: Source = "uploaded") -> dict[str, Any]:
        """Install a file from the host's disk (the operator's command line)."""
        if not path.is_file():
            raise AppError(ErrorCode.INVALID_MODEL, f"{path} is not a file.")
        with self.staging() as staged, open(path, "rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                staged.write(chunk)
            return self.install_staged(staged, request, source=source, extra={"file": path.name})

    def install_from_repository(
        self,
        doi: str,
        repository: ModelRepository,
        *,
        name: str | None = None,
        replace: bool = False,
        make_default: bool = False,
    ) -> dict[str, Any]:
        """Download record ``doi`` from kraken's model repository and install its model file.

        Without a name, the model is named after its file (``german_handwriting.mlmodel`` →
        ``german-handwriting``). Raises :class:`RepositoryUnavailableError` without network.
        """
        if name is not None:
            check_model_name(name)  # refuse a bad name before downloading anything
        download_dir = self.store.staging_dir / f"{uuid.uuid4().hex}.download"
        download_dir.mkdir()
        try:
            downloaded = repository.download(doi, download_dir, self.max_bytes)
            request = InstallRequest(
                name=name or slug_from_filename(downloaded.path.name), replace=replace, make_default=make_default
            )
            extra: dict[str, Any] = {"doi": downloaded.doi, "file": downloaded.path.name}
            if downloaded.title:
                extra["title"] = downloaded.title
            with self.staging() as staged, open(downloaded.path, "rb") as handle:
                while chunk := handle.read(_COPY_CHUNK):
                    staged.write(chunk)
                return self.install_staged(staged, request, source="downloaded", extra=extra)
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)

    # --- choosing and removing -------------------------------------------------------------
    def set_default(self, name: str | None) -> dict[str, Any]:
        """Choose the default recognition model; ``None`` falls back to ``OCR_DEFAULT_MODEL``."""
        if name is not None:
            entry = self.store.entry(self._known_name(name))
            if entry.kind == "segmentation":
                raise AppError(
                    ErrorCode.WRONG_MODEL_KIND,
                    f"'{name}' is a segmentation model; only a recognition model can be the default.",
                )
            if entry.kind != "recognition":
                raise AppError(
                    ErrorCode.INVALID_MODEL,
                    f"'{name}' cannot be used: {entry.problem or 'what kind of model it is is unknown'}.",
                )
        self.store.set_default(name)
        log.info("default recognition model is now %s", name or "(OCR_DEFAULT_MODEL)")
        return {"name": self.store.default_model}

    def set_segmentation(self, name: str | None) -> dict[str, Any]:
        """Choose the segmentation model of ``/ocr``; ``None`` goes back to ``OCR_SEGMENTATION_MODEL``
        (or the packaged model). The workers load it with the next page: no restart."""
        if name is not None:
            entry = self.store.entry(self._known_name(name))
            if entry.problem:
                raise AppError(ErrorCode.INVALID_MODEL, f"'{name}' cannot be used: {entry.problem}.")
            if entry.kind != "segmentation":
                what = f"a {entry.kind} model" if entry.kind else "a model of unknown kind"
                raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{name}' is {what}, not a segmentation model.")
        self.store.set_segmentation(name)
        current = self.store.segmentation_name
        log.info("segmentation model of OCR is now %s", current)
        return {"name": current, "chosen": self.store.chosen_segmentation}

    def remove(self, name: str) -> None:
        name = self._known_name(name)
        self.store.remove(name, in_use=self._models_in_use())
