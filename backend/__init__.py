"""The backend (documents, lines, OCR jobs, training runs, users): built in its own issue.

It will own the database and reach the OCR service only through its resilient client;
see ../shared/DESIGN.md. Nothing here yet but the package, so tooling covers it from day one.
"""
