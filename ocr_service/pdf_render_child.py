"""Inside the PDF renderer's child process: open documents as asked, render one page at a time.

The service kills this process when a page takes longer than its limit (pdfium cannot be
interrupted inside one page object: a form drawing a form ten times, eight levels deep, is one
object that takes minutes). So it holds nothing the service needs back: the documents are
reopened from the service's own file (a descriptor passed over the pipe) or bytes, and when
the pipe closes (the service closed it, or died) this process ends — at once, even in the
middle of a page: a thread watches the pipe while pdfium renders (pdfium releases the GIL), so
a service killed with ``kill -9`` or by the OOM killer leaves no orphan rendering for hours.

Messages in: ``("open", key, data | None)`` (with ``None`` a file descriptor follows),
``("render", key, index, scale)``, ``("close", key)``. Replies to ``render`` only:
``("page", width, height, mode, raw_mode, stride)`` then the pixels as one message, or
``("damaged", text)``, ``("failed", traceback)``, ``("memory", text)``.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any, BinaryIO

import pypdfium2 as pdfium
import pypdfium2.internal as pdfium_i

from ocr_service.pdf_load import OpenPdf, PdfLoadError

READY = "ready"


class _Documents:
    def __init__(self) -> None:
        self._open: dict[int, tuple[OpenPdf | PdfLoadError, BinaryIO | None]] = {}

    def open(self, key: int, source: bytes | BinaryIO) -> None:
        file = None if isinstance(source, bytes) else source
        try:
            loaded: OpenPdf | PdfLoadError = OpenPdf(source)
        except PdfLoadError as exc:
            # Reported with the first page asked for, the only message that has a reply.
            loaded = exc
        self._open[key] = (loaded, file)

    def get(self, key: int) -> OpenPdf:
        loaded, _ = self._open[key]
        if isinstance(loaded, PdfLoadError):
            raise loaded
        return loaded

    def close(self, key: int) -> None:
        loaded, file = self._open.pop(key, (None, None))
        if isinstance(loaded, OpenPdf):
            loaded.close()
        if file is not None:
            file.close()


def _reopen(fd: int) -> BinaryIO:
    """The service's file, opened anew: a descriptor of our own with its own read position
    (the passed one shares the service's position, which its own pdfium moves)."""
    try:
        return open(f"/proc/self/fd/{fd}", "rb")  # closed with its document
    finally:
        os.close(fd)


def _render(conn: Connection, documents: _Documents, key: int, index: int, scale: float) -> None:
    try:
        pdf = documents.get(key)
        page = pdf.document[index]
        try:
            bitmap = page.render(scale=scale, grayscale=False)
        finally:
            page.close()
    except MemoryError as exc:
        conn.send(("memory", str(exc)))
        return
    except (pdfium.PdfiumError, PdfLoadError, OSError, ValueError) as exc:
        conn.send(("damaged", f"{type(exc).__name__}: {exc}"))
        return
    except Exception:  # noqa: BLE001 - the service logs it with this traceback and refuses the page
        conn.send(("failed", traceback.format_exc()))
        return
    try:
        mode = pdfium_i.BitmapTypeToStrReverse[bitmap.format]
        conn.send(("page", bitmap.width, bitmap.height, mode, bitmap.mode, bitmap.stride))
        conn.send_bytes(bitmap.buffer)
    finally:
        bitmap.close()


def _end_with_the_service(fd: int) -> None:
    """Wait until the service's end of the socket is closed (it closed it, or it died), then end
    this process, whatever the main thread is rendering."""
    watch = select.poll()
    # Hang-up only (POLLHUP is always reported): a message waiting to be read is not the end.
    watch.register(fd, select.POLLRDHUP)
    while True:
        for _, events in watch.poll():
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)


def serve(conn: Connection, address_space: int = 0) -> None:
    """Answer the service on ``conn`` until it closes the connection; ``address_space``: the
    bytes this process may map (0: no limit), so that a page that makes pdfium allocate without
    bound fails here (a failed allocation, or this process's end) instead of taking the machine's memory."""
    if address_space:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    # Ctrl-C in a terminal reaches the whole process group; the service ends this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with_the_service, args=(conn.fileno(),), name="watch", daemon=True).start()
    documents = _Documents()
    conn.send((READY,))
    while True:
        try:
            message: tuple[Any, ...] = conn.recv()
        except EOFError:
            return
        if message[0] == "open":
            _, key, data = message
            documents.open(key, data if data is not None else _reopen(recv_handle(conn)))
        elif message[0] == "render":
            _, key, index, scale = message
            _render(conn, documents, key, index, scale)
        elif message[0] == "close":
            documents.close(message[1])


if __name__ == "__main__":
    # python -m ocr_service.pdf_render_child FD BYTES: FD is this end of the service's socket
    # pair, BYTES the address space this process may map (0: no limit).
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
