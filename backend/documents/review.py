"""A person marks a page reviewed: every line on it (positions and text) checked.

A reviewed page's lines are ground truth as they stand (recognition and writer runs take
their current text, segmentation runs their baselines and outlines). A new OCR reading of
the page clears the review (``Lines.replace_page``): its lines are not the ones checked.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from backend.documents.models import Document, Line, Page
from backend.errors import AppError, ErrorCode
from backend.users.models import User


def _locked_page(session: Session, document: Document, number: int) -> Page:
    # Locked (PostgreSQL): an OCR reading replacing this page's lines waits for the review, then
    # clears it; a review waiting for the reading sees its new lines. Never a review of a mix.
    page = session.scalar(
        select(Page)
        .where(Page.document_id == document.id, Page.number == number)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if page is None:
        raise AppError(ErrorCode.PAGE_NOT_FOUND, f"Document {document.id} has no page {number}.")
    return page


def mark_reviewed(session: Session, document: Document, number: int, user: User, now: datetime) -> Page:
    """Mark the page reviewed by ``user``. A page already reviewed keeps its first review (who
    and when): the lines are the same ones, and "new since the last run" must not count them again."""
    page = _locked_page(session, document, number)
    if page.reviewed_at is None:
        if not session.scalar(select(exists().where(Line.page_id == page.id))):
            session.rollback()
            raise AppError(
                ErrorCode.PAGE_HAS_NO_LINES,
                f"Page {number} has no lines to review yet; read the document with OCR first.",
            )
        page.reviewed_at, page.reviewed_by = now, user.id
    session.commit()
    session.refresh(page)
    return page


def unmark_reviewed(session: Session, document: Document, number: int) -> Page:
    """Take the review back (the page's lines count as ground truth only where corrected)."""
    page = _locked_page(session, document, number)
    page.reviewed_at, page.reviewed_by = None, None
    session.commit()
    session.refresh(page)
    return page
