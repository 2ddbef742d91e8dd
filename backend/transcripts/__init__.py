"""Transcriptions in the formats other tools read and write: PAGE XML, ALTO, plain text, PDF.

``model`` is the one shape both directions use: export builds it from the database, import
parses it from files, so a round trip compares like with like.
"""
