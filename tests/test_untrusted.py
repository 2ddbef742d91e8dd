"""The shared ZIP and XML safety package stands alone: neither service, nor torch or kraken, is
loaded with it (each service imports it; a cycle or a heavy import would tie them together)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_untrusted_imports_neither_service_nor_heavy_libraries() -> None:
    probe = (
        "import sys, untrusted.archive, untrusted.errors, untrusted.xml\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'backend', 'ocr_service', 'torch', 'kraken'})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_import_readers_do_not_load_the_ocr_service() -> None:
    probe = (
        "import sys, backend.imports.bundle, backend.transcripts.page_reader, backend.transcripts.alto_reader\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {'ocr_service', 'torch', 'kraken'})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
