"""Rendering PDF pages within a time limit: in a child process that is killed past the limit.

pdfium renders a page object in one go: its progressive API (``FPDF_RenderPageBitmap_Start``
with an ``IFSDK_PAUSE``) asks whether to pause only between objects, and one object can be a
form that draws a form ten times, nine levels deep (4 KB, hours to render; measured: seven
levels, a million strokes, 16 s without a single pause callback). A thread cannot be stopped either. So
pages are rendered in a child process (``pdf_render_child``), one at a time, and the child is
killed when a page takes longer than its limit: the document is refused (422
``DOCUMENT_TOO_COMPLEX``), the next render starts a fresh child, and nothing of the killed one
stays behind in the service (its memory and pdfium's handles went with its process).

The child opens each document from the service's own file (a descriptor passed over the pipe,
so nothing is copied) or bytes; a fresh child reopens a document when it is next rendered.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from pathlib import Path
from typing import Any, BinaryIO

import pypdfium2 as pdfium
from PIL import Image

from ocr_service.decoding import corrupt
from ocr_service.errors import AppError, ErrorCode
from ocr_service.pdf_render_child import READY

log = logging.getLogger(__name__)

# A fresh interpreter that imports only pypdfium2 and this package (not the service's main
# module, as multiprocessing's spawn would): never fork a process that has started threads.
_CHILD = "ocr_service.pdf_render_child"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# `python -c _BOOT ROOT MODULE ARGS...` runs MODULE as `python -m MODULE ARGS...` would, with
# this package importable from ROOT (the service's environment, PYTHONPATH included, is not
# read or changed: settings come only through Settings).
_BOOT = (
    "import runpy, sys; sys.path.insert(0, sys.argv[1]); module = sys.argv[2]; del sys.argv[1:3]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)
# A fresh interpreter importing pypdfium2: well under a second, seconds on a loaded machine.
_START_TIMEOUT_S = 60.0
# How often a render that waits for its page looks whether the renderer is being closed.
_POLL_S = 0.2
# A child that ended with this close to its address-space limit resident ended at the limit
# (what it maps but never touches, code and thread stacks, is well under it: measured 80 MB).
_AT_THE_LIMIT = 256 * 2**20


class PdfRenderer:
    """Renders pages of registered PDFs; safe to share between threads (one render at a time)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        child: str = _CHILD,
        address_space: int | None = None,
    ) -> None:
        """``child``: the module the child process runs (``python -m``); tests name a stand-in.
        ``address_space``: the child's RLIMIT_AS in bytes (``OCR_PDF_RENDER_MEMORY_MB``); None: none."""
        self._clock = clock
        self._child = child
        self._address_space = address_space
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._sources: dict[int, bytes | BinaryIO] = {}
        self._opened: set[int] = set()  # open in the current child
        self._refused: dict[int, AppError] = {}
        self._keys = itertools.count(1)
        self._closing = False
        self.children_started = 0

    @property
    def child_pid(self) -> int | None:
        """The running child's process id; None until a page is rendered, or after it was ended."""
        return self._process.pid if self._process is not None else None

    def add(self, source: bytes | BinaryIO) -> int:
        """Register a document (its bytes, or a seekable file kept open until :meth:`remove`)."""
        with self._lock:
            key = next(self._keys)
            self._sources[key] = source
            return key

    def remove(self, key: int) -> None:
        with self._lock:
            self._sources.pop(key, None)
            self._refused.pop(key, None)
            if key in self._opened and self._conn is not None:
                self._opened.discard(key)
                # A child that died meanwhile is noticed (and replaced) by the next render.
                with contextlib.suppress(OSError):
                    self._conn.send(("close", key))

    def render(self, key: int, index: int, scale: float, timeout_s: float) -> Image.Image:
        """Page ``index`` of document ``key`` at ``scale``, within ``timeout_s`` of rendering.

        422 ``DOCUMENT_TOO_COMPLEX`` past the limit (and for every later page of the document), or
        when the page needs more memory than the child may map; 422 ``CORRUPT_DOCUMENT`` if pdfium
        cannot render it, or if the page ends the child twice; 503 ``MODELS_NOT_READY`` while the
        renderer is being closed (the service is stopping).
        """
        page = index + 1
        with self._lock:
            refused = self._refused.get(key)
            if refused is not None:
                raise refused
            for attempt in (1, 2):
                conn = self._started()
                try:
                    self._open_in_child(key, conn)
                    conn.send(("render", key, index, scale))
                    reply = self._reply(conn, self._clock() + timeout_s)
                    return self._page(conn, reply, page)
                except TimeoutError:
                    self._stop()
                    error = AppError(
                        ErrorCode.DOCUMENT_TOO_COMPLEX,
                        f"Page {page} of the PDF took longer than {timeout_s:g} s to render; the document is "
                        "refused as too complex. Retrying will not help.",
                        details={"page": page, "limitSeconds": timeout_s},
                    )
                    self._refused[key] = error
                    log.info("page %d of a PDF rendered for longer than %g s; its renderer was killed", page, timeout_s)
                    raise error from None
                except (EOFError, OSError) as exc:
                    exitcode, peak = self._stop()
                    if self._closing:
                        raise _stopping() from None
                    if self._address_space and peak >= self._address_space - _AT_THE_LIMIT:
                        # pdfium ends its process when an allocation fails: this page wanted more
                        # than any page may map. Not retried (it would only grow as far again).
                        error = _too_much_memory(page)
                        self._refused[key] = error
                        log.info("page %d of a PDF ended its renderer at its memory limit (%d MB)", page, peak >> 20)
                        raise error from None
                    log.warning(
                        "the PDF renderer ended while rendering page %d (exit code %s, try %d): %s",
                        page,
                        exitcode,
                        attempt,
                        exc,
                    )
            # Twice: not the machine's memory or a passing fault, but this page.
            error = AppError(
                ErrorCode.CORRUPT_DOCUMENT,
                f"Page {page} of the PDF made the renderer fail twice; it is damaged and cannot be read.",
                details={"page": page},
            )
            self._refused[key] = error
            raise error

    def _page(self, conn: Connection, reply: tuple[Any, ...], page: int) -> Image.Image:
        subject = f"Page {page} of the PDF"
        if reply[0] == "page":
            _, width, height, mode, raw_mode, stride = reply
            data = conn.recv_bytes()
            if len(data) != stride * height:
                raise RuntimeError(f"the PDF renderer sent {len(data)} bytes for a {width}×{height} page")
            return Image.frombuffer(mode, (width, height), data, "raw", raw_mode, stride, 1)
        if reply[0] == "damaged":
            log.info("%s cannot be decoded: %s", subject, reply[1])
            raise corrupt(subject) from pdfium.PdfiumError(reply[1])
        if reply[0] == "memory":
            # Within its own address-space limit, sized for the largest page: the document's demand.
            log.info("%s needs more memory to render than a page may take: %s", subject, reply[1])
            raise _too_much_memory(page)
        # As decoding() does for an undeclared failure: answered as damage, logged with its traceback.
        log.warning("%s: the PDF renderer failed unexpectedly; answered as a damaged document\n%s", subject, reply[1])
        raise corrupt(subject)

    def _reply(self, conn: Connection, deadline: float) -> tuple[Any, ...]:
        while not conn.poll(max(0.0, min(deadline - self._clock(), _POLL_S))):
            if self._closing:
                raise EOFError("the PDF renderer is being closed")
            if self._clock() >= deadline:
                raise TimeoutError
        reply: tuple[Any, ...] = conn.recv()
        return reply

    def _open_in_child(self, key: int, conn: Connection) -> None:
        if key in self._opened:
            return
        source = self._sources[key]
        fd = None if isinstance(source, bytes) else _fileno(source)
        if fd is None:
            data = source if isinstance(source, bytes) else _whole(source)
            conn.send(("open", key, data))
        else:
            assert self._process is not None
            conn.send(("open", key, None))
            send_handle(conn, fd, self._process.pid)
        self._opened.add(key)

    def _started(self) -> Connection:
        if self._closing:
            raise _stopping()
        if self._conn is not None:
            return self._conn
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    _PACKAGE_ROOT,
                    self._child,
                    str(theirs.fileno()),
                    str(self._address_space or 0),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()  # the child holds its end; ours would keep the socket open after it died
        parent = Connection(ours.detach())
        self._process, self._conn = process, parent
        self.children_started += 1
        try:
            if not parent.poll(_START_TIMEOUT_S):
                raise RuntimeError(f"the PDF renderer did not start within {_START_TIMEOUT_S:g} s")
            if parent.recv() != (READY,):
                raise RuntimeError("the PDF renderer started with an unexpected message")
        except EOFError as exc:
            self._stop()
            raise RuntimeError("the PDF renderer ended while it started") from exc
        except BaseException:
            self._stop()
            raise
        return parent

    def _stop(self) -> tuple[int | None, int]:
        """End the child (it holds nothing the service needs); its exit code and the most
        memory it held (resident bytes)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self._opened.clear()
        if conn is not None:
            conn.close()
        if process is None:
            return None, 0
        if process.returncode is not None:
            return process.returncode, 0
        # Killed and reaped here rather than by Popen (whose kill() reaps a child that has died
        # already), for the kernel's account of its peak memory; not reaped yet, its pid is ours.
        os.kill(process.pid, signal.SIGKILL)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except ChildProcessError:  # reaped by someone else's waitpid(-1): its account is gone
            process.returncode = -signal.SIGKILL
            return None, 0
        process.returncode = os.waitstatus_to_exitcode(status)
        return process.returncode, usage.ru_maxrss * 1024

    def close(self) -> None:
        """End the child; a render waiting for its page gives up within a fraction of a second."""
        self._closing = True
        with self._lock:
            self._stop()
            self._sources.clear()


def _too_much_memory(page: int) -> AppError:
    return AppError(
        ErrorCode.DOCUMENT_TOO_COMPLEX,
        f"Page {page} of the PDF needs more memory to render than any page may take; the document is "
        "refused as too complex. Retrying will not help.",
        details={"page": page},
    )


def _stopping() -> AppError:
    # Not the document's fault, and no 500 for the backend to count against the service.
    return AppError(
        ErrorCode.MODELS_NOT_READY,
        "The OCR service is stopping; the PDF page was not rendered. Please try again shortly.",
        headers={"Retry-After": "10"},
    )


def _fileno(source: BinaryIO) -> int | None:
    try:
        # A SpooledTemporaryFile still in memory moves to disk here, and then has one.
        return source.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _whole(source: BinaryIO) -> bytes:
    # Only a file that has no descriptor, which lives in memory (io.BytesIO) already.
    source.seek(0)
    return source.read()


_shared: PdfRenderer | None = None
_shared_lock = threading.Lock()


def shared_renderer() -> PdfRenderer:
    """The renderer of documents opened without one of their own (tests, benchmarks); the
    service's read path owns its own (``OcrService``)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PdfRenderer()
            atexit.register(_shared.close)
        return _shared
