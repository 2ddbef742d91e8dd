"""Backups of the whole archive: the database's rows, the originals, the OCR service's models."""
