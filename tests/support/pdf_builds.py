"""PDFs written object by object, for what a drawing program would never produce: a page that
takes hours to render in 4 KB, a page tree with no pages behind a large cross-reference table."""

from __future__ import annotations

from collections.abc import Sequence


def build_pdf(objects: Sequence[bytes]) -> bytes:
    """A PDF whose objects 1..n are ``objects`` (object 1 the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _stream(entries: bytes, data: bytes) -> bytes:
    return b"<< " + entries + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def nested_forms_pdf(depth: int, fan: int, *, quick_pages: int = 0) -> bytes:
    """An A4 page that draws a form which draws the next form ``fan`` times, ``depth`` levels
    deep: ``fan ** (depth - 1)`` strokes. pdfium renders it as one object, without a pause:
    depth 7, fan 10 takes about 16 s on the build machine, and each level ten times more.
    ``quick_pages`` pages of one stroke each come before it."""
    # Objects: 1 catalog, 2 page tree, the quick pages, the slow page, its content, the quick
    # pages' one content stream (if any), the forms.
    slow_page = 3 + quick_pages
    quick_content = slow_page + 2
    first_form = quick_content + (1 if quick_pages else 0)
    quick = [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R >>" % quick_content,
    ] * quick_pages
    kids = b" ".join(b"%d 0 R" % (3 + n) for n in range(quick_pages + 1))
    forms = []
    for level in range(depth):
        if level == depth - 1:
            data, resources = b"0 0 m 10 10 l S", b""
        else:
            data = b" ".join(b"q 1 0 0 1 %d %d cm /F Do Q" % (k % 7, k % 5) for k in range(fan))
            resources = b"/Resources << /XObject << /F %d 0 R >> >>" % (first_form + level + 1)
        forms.append(_stream(b"/Type /XObject /Subtype /Form /BBox [0 0 595 842] " + resources, data))
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, quick_pages + 1),
            *quick,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
            b"/Resources << /XObject << /F %d 0 R >> >> >>" % (slow_page + 1, first_form),
            _stream(b"", b"/F Do"),
            *([_stream(b"", b"0 0 m 500 700 l S")] if quick_pages else []),
            *forms,
        ]
    )


def pageless_pdf(objects: int) -> bytes:
    """A valid PDF whose page tree is empty, with ``objects`` more objects in its xref table
    (pdfium keeps about 60 bytes per entry while the document is open)."""
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [] /Count 0 >>",
            *(b"(%d)" % number for number in range(objects)),
        ]
    )
