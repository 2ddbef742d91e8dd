"""The optional page range of ``/ocr`` and ``/ocr/stream``: ``firstPage`` and ``lastPage``.

Counted from 1, both inclusive, in the document's own numbering: a client resuming a
200-page document at page 151 asks for ``firstPage=151`` and gets pages numbered 151 to 200.
The numbers are checked in two steps: their form as soon as the request is read (a form
field in ASCII digits or a JSON integer, at least 1, ``lastPage`` not before ``firstPage``), and against
the document once its page count is known (a range past the last page is refused, naming
the page count). Every refusal is 422 ``INVALID_PAGE_RANGE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocr_service.errors import AppError, ErrorCode

FIRST_PAGE = "firstPage"
LAST_PAGE = "lastPage"

# ASCII digits only: str.isdigit() and int() also take "３" (full-width), "٣" (Arabic-Indic),
# " 3" and "+3"; a page number has one spelling. Up to the 1 KB a form field may hold: well
# below int()'s 4300-digit guard.
_DIGITS = re.compile(r"[0-9]{1,1024}")
# A number quoted back in a message is cut to this many digits (a form field holds up to 1 KB).
_QUOTED_DIGITS = 12


def _refused(message: str, **details: object) -> AppError:
    return AppError(ErrorCode.INVALID_PAGE_RANGE, message, details=dict(details) or None)


def page_number(name: str, value: object, *, text: bool) -> int | None:
    """One page number as a client sent it; None when absent.

    ``text``: a form field, which arrives as text (ASCII digits); otherwise a JSON value,
    which must be a JSON integer (not a string, a float such as 1e9, or true).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str if text else int):
        kind = "a text field of the form" if text else "a JSON integer"
        raise _refused(f"{name} must be a whole page number counted from 1, sent as {kind}.", field=name)
    if isinstance(value, str):
        if _DIGITS.fullmatch(value) is None:
            raise _refused(
                f"{name} must be a whole page number written in the digits 0-9, counted from 1 "
                "(no sign, spaces, decimal point or exponent).",
                field=name,
            )
        value = int(value)
    if value < 1:
        raise _refused(f"{name} counts pages from 1; {_quoted(value)} is not a page.", field=name)
    return value


def _quoted(value: int) -> str:
    digits = str(value)
    return digits if len(digits) <= _QUOTED_DIGITS else digits[:_QUOTED_DIGITS] + "…"


@dataclass(frozen=True)
class PageRange:
    """Pages ``first`` to ``last`` (from 1, inclusive); None on either side: from the first page /
    to the last page of the document."""

    first: int | None = None
    last: int | None = None

    def __post_init__(self) -> None:
        if self.first is not None and self.last is not None and self.last < self.first:
            raise _refused(
                f"{LAST_PAGE} ({_quoted(self.last)}) comes before {FIRST_PAGE} ({_quoted(self.first)}).",
            )

    @classmethod
    def of(cls, first: object, last: object, *, text: bool) -> PageRange:
        """The range from the two fields as sent (form text or JSON values, see :func:`page_number`);
        their form is checked here, the document later by :meth:`indices`."""
        return cls(page_number(FIRST_PAGE, first, text=text), page_number(LAST_PAGE, last, text=text))

    def indices(self, page_count: int) -> range:
        """The pages to read as indices from 0; refused when the range reaches past the document."""
        first = 1 if self.first is None else self.first
        last = page_count if self.last is None else self.last
        for name, value in ((FIRST_PAGE, self.first), (LAST_PAGE, self.last)):
            if value is not None and value > page_count:
                pages = "1 page" if page_count == 1 else f"{page_count} pages"
                raise _refused(
                    f"{name} is {_quoted(value)}, but the document has {pages}.",
                    field=name,
                    pages=page_count,
                )
        return range(first - 1, last)
