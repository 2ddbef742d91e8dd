"""Earlier versions of a model: ``.backups/<name>/v<version>-<time><ext>`` and its description."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ocr_service.model_ref import MODEL_SUFFIXES


def back_up(folder: Path, current: Path, version: int, meta: Path, *, keep: int) -> None:
    """Keep ``current`` (version ``version``) and its description; only the newest ``keep`` stay."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    backup = folder / f"v{version}-{stamp}{current.suffix}"
    # Never write into an existing file: it may be a hard link that a document being
    # read (its pin) or an earlier backup shares. Two backups in one second get a count.
    count = 1
    while backup.exists() or backup.with_suffix(".json").exists():
        backup = folder / f"v{version}-{stamp}-{count}{current.suffix}"
        count += 1
    # A hard link, not a move: the current file stays in place until the new one replaces it.
    try:
        os.link(current, backup)
    except OSError:
        tmp = folder / f".{backup.name}.tmp"
        shutil.copy2(current, tmp)
        os.replace(tmp, backup)
    if meta.exists():
        shutil.copyfile(meta, backup.with_suffix(".json"))
    for stale in list_backups(folder)[:-keep]:
        stale.unlink(missing_ok=True)
        stale.with_suffix(".json").unlink(missing_ok=True)


def list_backups(folder: Path) -> list[Path]:
    """The backups in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES), key=lambda p: p.stat().st_mtime_ns)
