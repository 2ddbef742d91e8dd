"""A process that starts a PDF renderer on a page that renders for hours, says its child's
process id and the child's CPU time at that moment, and waits to be killed."""

from __future__ import annotations

import threading
import time

from ocr_service.pdf_render import PdfRenderer
from tests.support.pdf_builds import nested_forms_pdf

if __name__ == "__main__":
    renderer = PdfRenderer()
    key = renderer.add(nested_forms_pdf(depth=9, fan=10))
    threading.Thread(target=renderer.render, args=(key, 0, 1.0, 3600.0), daemon=True).start()
    while renderer.child_pid is None:
        time.sleep(0.05)
    print(renderer.child_pid, flush=True)
    time.sleep(3600)
