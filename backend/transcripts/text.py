"""A transcription as plain text: the lines in reading order, one a line, pages separated by a form feed.

The form feed (U+000C) between pages is the plain-text page break that pdftotext and OCRmyPDF's
sidecar files use: editors and printers start a new page there, and scripts split on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from backend.transcripts.model import TranscriptDocument, TranscriptPage

PAGE_BREAK = "\f"
# Characters XML 1.0 cannot hold (control characters, lone surrogates, U+FFFE/U+FFFF): removed
# from every export alike, so the text, PAGE and ALTO of a line never differ.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A line is one line: breaks a person typed into it become spaces.
_BREAKS = re.compile(r"[\t\n\r]+")


def clean_text(text: str) -> str:
    """``text`` as one line that XML can hold: breaks and tabs become a space, control
    characters (and other code points XML 1.0 forbids) are dropped."""
    return _NOT_XML.sub("", _BREAKS.sub(" ", text))


def page_text(page: TranscriptPage) -> str:
    """The page's lines in reading order, each ending with a newline (an empty line stays one)."""
    return "".join(f"{clean_text(line.text)}\n" for line in page.lines)


def document_text(document: TranscriptDocument) -> Iterator[str]:
    """The document page by page, a form feed before every page but the first."""
    for n, page in enumerate(document.pages):
        yield (PAGE_BREAK if n else "") + page_text(page)
