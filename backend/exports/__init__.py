"""Exports of transcriptions: one document or a selection, as plain text, PAGE XML or ALTO (+ PDF)."""
