"""Production mode (``APP_ENV=production``): the backend will not serve with a guessable secret.

Checked before the server starts (``python -m backend``), next to the other settings checks;
the maintenance commands (backup, restore, create-user) are not held up by it.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from backend.settings import Settings
from untrusted.guessable import guessable_secret_problem, placeholder_in

# The training token guards training and model management on the OCR service: as long as
# token_hex(16) at least (token_hex(32), which .env.example shows, has 64 characters).
TOKEN_MIN_LENGTH = 32
PASSWORD_MIN_LENGTH = 12


def production_problems(settings: Settings) -> list[str]:
    """What keeps these settings from production, one line each naming the setting; empty: none."""
    if settings.env != "production":
        return []
    problems: list[str] = []

    def judge(name: str, value: str, min_length: int) -> None:
        problem = guessable_secret_problem(value, min_length=min_length)
        if problem is not None:
            problems.append(f"{name} {problem}")

    token = settings.ocr_training_token
    judge("APP_OCR_TRAINING_TOKEN", token.get_secret_value() if token else "", TOKEN_MIN_LENGTH)
    if settings.admin_password is not None:
        judge("APP_ADMIN_PASSWORD", settings.admin_password.get_secret_value(), PASSWORD_MIN_LENGTH)
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        password = url.password if isinstance(url.password, str) else ""
        judge("the password in APP_DATABASE_URL", password, PASSWORD_MIN_LENGTH)
        if url.username and password and url.username.lower() in password.lower():
            problems.append("the password in APP_DATABASE_URL contains the user name")
    if settings.s3_secret_access_key is not None:
        judge("APP_S3_SECRET_ACCESS_KEY", settings.s3_secret_access_key.get_secret_value(), PASSWORD_MIN_LENGTH)
    if settings.s3_access_key_id is not None:
        # A key id is a name, not a secret; only a well-known default (MinIO's minioadmin) is refused.
        word = placeholder_in(settings.s3_access_key_id.get_secret_value())
        if word is not None:
            problems.append(f"APP_S3_ACCESS_KEY_ID looks like a default ({word!r} in it); choose your own")
    return problems
