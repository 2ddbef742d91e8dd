"""What a person reads for each error code either service can return, in the catalogs' words.

The API's own ``message`` is English for developers and logs; the UI shows these instead, in
the reader's language, calm and saying what to do. The keys are the codes of both services
(the OCR service's reach the UI through OCR jobs and training runs); tests/web/test_catalogs.py
checks that every code has one and that each is translated into every language.
"""

from __future__ import annotations

from collections.abc import Mapping

from backend.web.i18n import N_

ERROR_MESSAGES: Mapping[str, str] = {
    "NOT_AUTHENTICATED": N_("Please log in."),
    "INVALID_CREDENTIALS": N_("The user name or the password is wrong. Please try again."),
    "CSRF_FAILED": N_("This page is out of date. Please reload it and try again."),
    "OCR_SERVICE_UNAVAILABLE": N_("The OCR service is not available just now. Please wait a moment and try again."),
    "INTERNAL_ERROR": N_("Something went wrong. Please try again; if it happens again, tell your admin."),
}
# Shown where a code is unknown to this version of the UI (a newer service, say).
FALLBACK = "INTERNAL_ERROR"
