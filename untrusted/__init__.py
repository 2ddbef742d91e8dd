"""Reading files a client sent without trusting them: ZIP archives and XML.

Shared by the backend (imports) and the OCR service (training ZIPs). It imports neither: each
service maps the exceptions in :mod:`untrusted.errors` to its own error codes.
"""
