"""Secrets an operator configured, judged before a service starts in production.

An installation copied from an example, or set up in a hurry, must not go live with a secret
anyone could guess: an empty training token, ``changeme``, MinIO's ``minioadmin``. Both services
judge their secrets with :func:`guessable_secret_problem` when their ``*_ENV`` is ``production``.
What passes is what ``python3 -c "import secrets; print(secrets.token_hex(32))"`` makes.
"""

from __future__ import annotations

import re

# The command .env.example shows; the messages repeat it, so the fix is in the refusal.
MAKE_ONE = 'python3 -c "import secrets; print(secrets.token_hex(32))"'

# Parts of placeholders and default credentials, compared without case, digits stripped from
# neither side. Each has a letter outside a-f, so a hex secret (token_hex) never contains one.
PLACEHOLDERS = (
    "admin",
    "change",
    "default",
    "dummy",
    "example",
    "fixme",
    "geheim",
    "insecure",
    "letmein",
    "minio",
    "passw",
    "placeholder",
    "postgres",
    "qwerty",
    "replace",
    "secret",
    "test",
    "todo",
    "token",
    "xxx",
    "your",
)
# Fewer distinct characters than this is a pattern (aaaa…, abab…, 1212…), not a secret.
MIN_DISTINCT = 8
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")


def placeholder_in(value: str) -> str | None:
    """The placeholder ``value`` contains (case, spaces and punctuation aside), or None."""
    folded = _NOT_ALPHANUMERIC.sub("", value.lower())
    return next((word for word in PLACEHOLDERS if word in folded), None)


def guessable_secret_problem(value: str, *, min_length: int) -> str | None:
    """Why ``value`` is no secret for production, in words that follow the setting's name; None if it is."""
    if not value:
        return f"is empty; make one with {MAKE_ONE}"
    if len(value) < min_length:
        return f"is shorter than {min_length} characters; make one with {MAKE_ONE}"
    word = placeholder_in(value)
    if word is not None:
        return f"looks like a placeholder or default ({word!r} in it); make one with {MAKE_ONE}"
    if len(set(value)) < MIN_DISTINCT:
        return f"repeats fewer than {MIN_DISTINCT} different characters; make one with {MAKE_ONE}"
    return None
