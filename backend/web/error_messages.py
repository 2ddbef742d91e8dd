"""What a person reads for each error code either service can return, in the catalogs' words.

The API's own ``message`` is English for developers and logs; the UI shows these instead, in
the reader's language, calm, saying what happened and what to do. The keys are the codes of both
services: the OCR service's reach the UI through OCR jobs and training runs, and a code both
services know reads the same, so each message fits either. tests/web/test_error_messages.py
checks that every code of both enums has a message and that each is translated into every language.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from backend.web.i18n import N_

ERROR_MESSAGES: Mapping[str, str] = {
    # the request's shape (both services)
    "INVALID_REQUEST": N_("Something in what was sent is not right. Please check your entries and try again."),
    "MALFORMED_JSON": N_("The page sent something the archive could not read. Please reload the page and try again."),
    "UNSUPPORTED_MEDIA_TYPE": N_("This kind of data cannot be sent here. Please reload the page and try again."),
    "NOT_FOUND": N_("There is nothing at this address. Please check the link or start again from the documents."),
    "METHOD_NOT_ALLOWED": N_("This is not possible here. Please reload the page and try again."),
    "REQUEST_TOO_LARGE": N_("What was sent is too large. Please choose a smaller file."),
    "BODY_TIMEOUT": N_("Sending took too long. Please check the connection and try again."),
    # users and security
    "NOT_AUTHENTICATED": N_("Please log in."),
    "INVALID_CREDENTIALS": N_("The user name or the password is wrong. Please try again."),
    "LOGIN_THROTTLED": N_("There were too many attempts to log in. Please wait a few minutes and try again."),
    "FORBIDDEN": N_("You may not do this. If you need to, ask an admin."),
    "CSRF_FAILED": N_("This page is out of date. Please reload it and try again."),
    "SETUP_DONE": N_("The archive is set up already. Please log in, or ask an admin for an account."),
    "SETUP_TOKEN_INVALID": N_(
        "This setup link is not valid (any more). Please use the link the archive printed when it started."
    ),
    "USER_EXISTS": N_("There is already a user with this name. Please choose another name."),
    "USER_NOT_FOUND": N_("This user does not exist (any more). Please reload the page."),
    "LAST_ADMIN": N_("This is the last admin. Please make someone else an admin first."),
    "WRONG_PASSWORD": N_("The current password is not right. Please type it again."),
    "UNAUTHORIZED": N_(
        "The archive may not use the OCR service's training. Please tell your admin: the training key needs a look."
    ),
    # documents and pages (both services)
    "DOCUMENT_NOT_FOUND": N_("This document cannot be found; it may be in the trash. Please reload the page."),
    "DUPLICATE_DOCUMENT": N_("This file is in the archive already, so it was not added a second time."),
    "UNSUPPORTED_DOCUMENT_TYPE": N_(
        "This kind of file cannot be read. Please use a PDF, JPEG, PNG, TIFF or WebP file."
    ),
    "CORRUPT_DOCUMENT": N_("This file is damaged and cannot be opened. Please try another copy of it."),
    "EMPTY_DOCUMENT": N_("This file is empty. Please choose the right file."),
    "DOCUMENT_TOO_LARGE": N_(
        "This file is too large. Please split it into smaller files, or scan it at a lower resolution."
    ),
    "TOO_MANY_PAGES": N_("This document has too many pages. Please split it into smaller documents."),
    "NOT_IN_TRASH": N_("This document is not in the trash (any more). Please reload the page."),
    "TRASH_EXPIRED": N_("This document was in the trash too long and cannot be restored any more."),
    "PAGE_NOT_FOUND": N_("This page of the document cannot be found. Please reload the document."),
    "PAGE_TOO_LARGE": N_("This page's image is too large to be shown or read. Please scan it at a lower resolution."),
    "PAGE_HAS_NO_LINES": N_("This page has no lines yet. Please start the OCR for it first."),
    "DOCUMENT_TOO_COMPLEX": N_(
        "This document is too complex to be read. Please save it as images or as a simpler PDF and upload that."
    ),
    "PAGE_SHAPE_UNSUPPORTED": N_(
        "The OCR cannot find lines on a page of this shape (very narrow or very wide). Please check the scan."
    ),
    "INVALID_PAGE_RANGE": N_("These pages do not exist in the document. Please check the page numbers."),
    # lines
    "LINE_NOT_FOUND": N_(
        "This line does not exist any more; the page may have been read again. Please reload the document."
    ),
    "LINE_CHANGED": N_(
        "Someone else changed this line in the meantime. Please compare both texts and choose which to keep."
    ),
    # the OCR service and OCR jobs
    "OCR_SERVICE_UNAVAILABLE": N_("The OCR service is not available just now. Please wait a moment and try again."),
    "OCR_JOB_NOT_FOUND": N_("This OCR run cannot be found any more. Please reload the page."),
    "OCR_BATCH_NOT_FOUND": N_("This group of OCR runs cannot be found any more. Please reload the page."),
    "OCR_ALREADY_RUNNING": N_("The OCR is running for this document already. Please wait until it has finished."),
    "OCR_JOB_FINISHED": N_("This run has finished already, so there is nothing to cancel."),
    "JOB_NOT_FOUND": N_("The OCR service does not know this run any more. Please start it again."),
    "JOB_FINISHED": N_("This run has finished already, so there is nothing to cancel."),
    "URL_NOT_ALLOWED": N_(
        "The OCR service may not fetch documents from the archive's address. Please tell your admin: "
        "the settings need a look."
    ),
    "DOCUMENT_FETCH_FAILED": N_(
        "The OCR service could not fetch the document. Please try again; if it happens again, tell your admin."
    ),
    "DOCUMENT_UNREACHABLE": N_(
        "The OCR service could not reach the archive to fetch the document. Please wait a moment and try again."
    ),
    "DOCUMENT_FETCH_TIMEOUT": N_(
        "Fetching the document for the OCR took too long. Please wait a moment and try again."
    ),
    "SERVICE_BUSY": N_("The OCR service is busy just now. Please wait a moment and try again."),
    "MODELS_NOT_READY": N_("The OCR service is still starting. Please wait a moment and try again."),
    "SEGMENTATION_MODEL_UNUSABLE": N_(
        "The OCR service cannot find the lines on pages just now. Please tell your admin."
    ),
    "OCR_FAILED": N_("Reading this page failed. Please try again; if it happens again, tell your admin."),
    "PAGE_TIMEOUT": N_(
        "Reading this page took too long and was stopped. Please check the scan; a smaller, clearer image may help."
    ),
    "PAGE_KILLED_WORKER": N_(
        "This page could not be read: it stopped the OCR twice. Please check the scan; a smaller image may help."
    ),
    # models
    "UNKNOWN_MODEL": N_("This model is not known. Please choose another model."),
    "MODEL_NOT_FOUND": N_("This model cannot be found. Please reload the page and choose another model."),
    "WRONG_MODEL_KIND": N_(
        "This model is for other work (finding lines, or reading them). Please choose a model for this work."
    ),
    "INVALID_MODEL_NAME": N_("This model name is not possible. Please use only letters, digits and hyphens."),
    "INVALID_MODEL": N_("This model file cannot be used. Please tell your admin."),
    "MODEL_TOO_LARGE": N_("This model file is too large. Please tell your admin."),
    "MODEL_EXISTS": N_("There is already a model with this name. Please choose another name."),
    "MODEL_PROTECTED": N_("This model is protected and cannot be changed or removed."),
    "MODEL_IS_DEFAULT": N_("This model is the default and cannot be removed. Please choose another default first."),
    "MODEL_IN_USE": N_("This model is in use just now. Please wait until the OCR has finished and try again."),
    # writers and training
    "WRITER_NOT_FOUND": N_("This writer cannot be found. Please reload the page."),
    "TRAINING_DISABLED": N_("Training is switched off for this archive. Please ask your admin to switch it on."),
    "TRAINING_ALREADY_RUNNING": N_("A training is running already. Please wait until it has finished."),
    "TRAINING_BUSY": N_("The OCR service is training a model already. Please wait until it has finished."),
    "NOT_ENOUGH_TRAINING_DATA": N_(
        "There are not enough corrected lines for a training yet. Please correct more lines first."
    ),
    "TRAINING_RUN_NOT_FOUND": N_("This training run cannot be found any more. Please reload the page."),
    "TRAINING_RUN_FINISHED": N_("This training run has finished already, so there is nothing to cancel."),
    "MODEL_NOT_ADOPTABLE": N_(
        "This model cannot be adopted: its training did not finish, or it was adopted already. Please reload the page."
    ),
    "INVALID_ARCHIVE": N_(
        "The training data could not be read. Please try again; if it happens again, tell your admin."
    ),
    "UNSAFE_ARCHIVE": N_("The training data was refused as unsafe. Please tell your admin."),
    "ARCHIVE_TOO_LARGE": N_("The training data is too large for one run. Please tell your admin."),
    "INVALID_TRAINING_DATA": N_(
        "The training data cannot be used (lines without text, say). Please check the corrected lines and try again."
    ),
    # search, export, import
    "SEARCH_QUERY_INVALID": N_(
        "The search cannot be run like this. Please type at least one word to look for (at most 200 characters)."
    ),
    "SEARCH_UNAVAILABLE": N_("The search is not available just now. Please wait a moment and try again."),
    "SEARCH_BUSY": N_("Many people are searching just now. Please try again in a few seconds."),
    "EXPORT_SELECTION_TOO_LARGE": N_(
        "Too many documents are chosen for one export. Please choose fewer and export them in several steps."
    ),
    "IMPORT_TOO_LARGE": N_("This ZIP file is too large to import. Please split it into several smaller ZIP files."),
    "IMPORT_NOT_A_ZIP": N_(
        "This is not a ZIP file. Please choose the ZIP file exported from Transkribus or eScriptorium."
    ),
    "IMPORT_UNSAFE_ARCHIVE": N_(
        "This ZIP file cannot be imported safely, so nothing was imported. Please export it again from "
        "Transkribus or eScriptorium."
    ),
    "IMPORT_INVALID_XML": N_(
        "A PAGE or ALTO file in this ZIP file cannot be read, so nothing was imported. Please export it again."
    ),
    "IMPORT_IMAGE_MISSING": N_(
        "An image that a PAGE or ALTO file names is missing from the ZIP file, so nothing was imported. "
        "Please export it again with the images."
    ),
    "IMPORT_IMAGE_INVALID": N_(
        "An image in this ZIP file cannot be opened, so nothing was imported. Please export it again."
    ),
    "IMPORT_NOTHING_FOUND": N_(
        "This ZIP file holds no PAGE or ALTO files, so nothing was imported. Please export it again as PAGE or ALTO."
    ),
    # the backend itself
    "DATABASE_UNAVAILABLE": N_(
        "The archive's database cannot be reached just now. Please wait a moment and try again."
    ),
    "STORAGE_UNAVAILABLE": N_(
        "The archive's document store cannot be reached just now. Please wait a moment and try again."
    ),
    "SHUTTING_DOWN": N_("The archive is restarting just now. Please wait a moment and try again."),
    "INTERNAL_ERROR": N_("Something went wrong. Please try again; if it happens again, tell your admin."),
}
# Shown where a code is unknown to this version of the UI (a newer service, say).
FALLBACK = "INTERNAL_ERROR"


def codes_without_message(*enums: Iterable[Enum], messages: Mapping[str, str] = ERROR_MESSAGES) -> list[str]:
    """The codes of the given error enums that have no message (each must have one)."""
    return sorted({str(code.value) for enum in enums for code in enum} - set(messages))
