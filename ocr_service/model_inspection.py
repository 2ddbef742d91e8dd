"""Loading candidate model files to learn what they are: one at a time, within a time limit.

Uploads, downloads, trained models and files an operator places in the store by hand all
go through one :class:`ModelChecker`, whose lock lets one child process with torch (1–2 GB)
run at a time, so a burst of uploads or a folder of new files cannot take the OCR workers'
memory. Hand-placed files are inspected by :class:`LocalModelInspector`: in the service in
the background (``GET /models`` is unauthenticated and must not start processes on demand),
on the operator's command line at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from ocr_service.engine.validate import model_checker
from ocr_service.model_ref import ModelFacts, ModelFileError
from ocr_service.settings import Settings
from ocr_service.store import ModelStore

log = logging.getLogger(__name__)


class ModelChecker:
    def __init__(self, validate: Callable[[Path], ModelFacts]) -> None:
        self._validate = validate
        self._one_at_a_time = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelChecker:
        return cls(model_checker(settings))

    def facts(self, path: Path) -> ModelFacts:
        """What ``path`` is; :class:`ModelFileError` if kraken cannot use it."""
        with self._one_at_a_time:
            return self._validate(path)


class LocalModelInspector:
    """Describes each hand-placed model file once; :meth:`notice` queues, :meth:`inspect` waits."""

    def __init__(self, store: ModelStore, checker: ModelChecker) -> None:
        self._store = store
        self._checker = checker
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def notice(self, name: str) -> None:
        """Queue ``name`` for inspection unless it is queued already; returns at once."""
        with self._lock:
            if name in self._pending:
                return
            self._pending.add(name)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="model-inspection", daemon=True)
                self._thread.start()
        self._queue.put(name)

    def inspect(self, name: str) -> None:
        """Inspect ``name``'s current file now, unless its description is current already."""
        path = self._store.file_of(name)
        if path is None:
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        if not self._store.entry_is_stale(name, stat):
            return
        try:
            facts: ModelFacts | None = self._checker.facts(path)
            problem = None
        except ModelFileError as exc:
            log.warning("model file %s cannot be used: %s", path.name, exc)
            facts, problem = None, str(exc)
        try:
            self._store.record_inspection(name, path, stat, facts, problem)
        except FileNotFoundError:
            return  # removed while it was inspected

    def _work(self) -> None:
        while True:
            name = self._queue.get()
            try:
                if name is None:
                    return
                self.inspect(name)
            except Exception:
                # The thread must outlive one bad file; the failure is logged in full.
                log.exception("inspecting model file '%s' failed", name)
            finally:
                with self._lock:
                    self._pending.discard(name or "")
                self._queue.task_done()

    def wait_idle(self) -> None:
        """Until every file noticed so far has been inspected (for tests and the command line)."""
        self._queue.join()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=5)
