"""Production mode: neither service starts with an empty or guessable secret.

Placeholders are generated (hypothesis): the words people and examples use, in any case, with
any separators and padding; secrets as .env.example says to make them are generated too, and pass.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from backend.production import PASSWORD_MIN_LENGTH, TOKEN_MIN_LENGTH, production_problems
from backend.settings import Settings
from ocr_service.settings import Settings as OcrSettings
from ocr_service.settings import production_problems as ocr_production_problems
from tests.support import compose
from untrusted.guessable import MAKE_ONE, guessable_secret_problem

ROOT = Path(__file__).resolve().parents[2]
# What people write where a secret belongs, and the defaults of the images compose runs.
PLACEHOLDERS = [
    "changeme",
    "change-me",
    "CHANGE_ME_PLEASE",
    "your-secret-here",
    "<your token>",
    "minioadmin",
    "admin",
    "password",
    "Passwort",
    "secret",
    "example",
    "placeholder",
    "test",
    "token",
    "xxxxxxxx",
    "postgres",
    "default",
    "dummy",
    "insecure",
    "replace-with-a-real-token",
    "geheim",
    "letmein",
    "qwerty",
]


def _strong() -> str:
    return secrets.token_hex(32)


@st.composite
def placeholders(draw: st.DrawFn, min_length: int) -> str:
    """A placeholder as it may appear: any case, padded with digits, dashes or random letters."""
    word = draw(st.sampled_from(PLACEHOLDERS))
    word = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)
    padding = st.text(alphabet="0123456789-_.:!@#ABCDEFabcdef", max_size=40)
    text = draw(padding) + word + draw(padding)
    # Long enough that only the placeholder, not the length, can be the reason it is refused.
    return text + "0" * max(0, min_length - len(text))


@settings(deadline=None)
@given(placeholders(TOKEN_MIN_LENGTH))
def test_a_placeholder_is_refused_however_it_is_dressed(value: str) -> None:
    problem = guessable_secret_problem(value, min_length=TOKEN_MIN_LENGTH)
    assert problem is not None and MAKE_ONE in problem


@settings(deadline=None)
@given(st.binary(min_size=TOKEN_MIN_LENGTH // 2, max_size=64).map(bytes.hex))
def test_a_secret_made_as_env_example_says_passes(value: str) -> None:
    # token_hex of random bytes; hypothesis also tries degenerate bytes (all zero), which must fail.
    problem = guessable_secret_problem(value, min_length=TOKEN_MIN_LENGTH)
    assert (problem is None) == (len(set(value)) >= 8)


@settings(deadline=None)
@given(st.text(max_size=TOKEN_MIN_LENGTH - 1))
def test_a_short_secret_is_refused(value: str) -> None:
    assert guessable_secret_problem(value, min_length=TOKEN_MIN_LENGTH) is not None


@settings(deadline=None)
@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=7), st.integers(min_value=5, max_value=40))
def test_a_repeated_pattern_is_refused(unit: str, times: int) -> None:
    value = (unit * times)[: max(TOKEN_MIN_LENGTH, len(unit) * 5)]
    assume(len(value) >= TOKEN_MIN_LENGTH)
    assert guessable_secret_problem(value, min_length=TOKEN_MIN_LENGTH) is not None


def _production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "production",
        "ocr_training_token": _strong(),
        "database_url": f"postgresql://familienarchiv:{_strong()}@db:5432/familienarchiv",
    }
    return Settings.model_validate({**values, **overrides})


def test_a_well_made_production_configuration_passes() -> None:
    configured = _production(
        admin_username="oma",
        admin_password=_strong(),
        storage="s3",
        s3_bucket="archive",
        s3_access_key_id="archive-backend",
        s3_secret_access_key=_strong(),
    )
    assert production_problems(configured) == []
    assert production_problems(_production(database_url="sqlite:////data/archive/backend.db")) == []


@settings(deadline=None)
@given(
    setting=st.sampled_from(["token", "admin", "database", "s3_secret"]),
    value=placeholders(PASSWORD_MIN_LENGTH),
)
def test_each_secret_is_judged_and_named_in_production_only(setting: str, value: str) -> None:
    named = {
        "token": ("APP_OCR_TRAINING_TOKEN", {"ocr_training_token": value}),
        "admin": ("APP_ADMIN_PASSWORD", {"admin_username": "oma", "admin_password": value}),
        # Only what a URL's password may hold unquoted; what is left is still a placeholder, or short.
        "database": (
            "APP_DATABASE_URL",
            {"database_url": f"postgresql://familienarchiv:{re.sub(r'[^A-Za-z0-9_-]', '', value)}@db/x"},
        ),
        "s3_secret": (
            "APP_S3_SECRET_ACCESS_KEY",
            {"s3_access_key_id": "archive-backend", "s3_secret_access_key": value},
        ),
    }
    name, overrides = named[setting]
    problems = production_problems(_production(**overrides))
    assert any(name in problem for problem in problems), problems
    assert production_problems(_production(env="development", **overrides)) == []


@pytest.mark.parametrize("key_id", ["minioadmin", "MinioAdmin", "admin", "AKIAIOSFODNN7EXAMPLE"])
def test_a_default_s3_key_id_is_refused(key_id: str) -> None:
    problems = production_problems(_production(s3_access_key_id=key_id, s3_secret_access_key=_strong()))
    assert any("APP_S3_ACCESS_KEY_ID" in problem for problem in problems)


def test_an_empty_training_token_is_refused_in_production() -> None:
    problems = production_problems(_production(ocr_training_token=""))
    assert problems == [f"APP_OCR_TRAINING_TOKEN is empty; make one with {MAKE_ONE}"]
    assert ocr_production_problems(OcrSettings(env="production")) == [
        f"OCR_TRAINING_TOKEN is empty; make one with {MAKE_ONE}"
    ]


def test_a_database_password_that_holds_the_user_name_is_refused() -> None:
    password = "familienarchiv" + _strong()[:12]
    problems = production_problems(_production(database_url=f"postgresql://familienarchiv:{password}@db/x"))
    assert problems == ["the password in APP_DATABASE_URL contains the user name"]


@settings(deadline=None)
@given(placeholders(TOKEN_MIN_LENGTH))
def test_the_ocr_service_judges_its_token_the_same_way(value: str) -> None:
    assert ocr_production_problems(OcrSettings(env="production", training_token=SecretStr(value)))
    assert ocr_production_problems(OcrSettings(env="development", training_token=SecretStr(value))) == []


def test_env_example_deployed_as_it_is_does_not_start() -> None:
    """`cp .env.example .env` with only the required values filled in: both services refuse."""
    documented = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    environment = {**documented, **compose.REQUIRED}
    backend = compose.service_environment("backend", environment)
    ocr = compose.service_environment("ocr-service", environment)
    backend_settings = Settings.model_validate(
        {k.removeprefix("APP_").lower(): v for k, v in backend.items() if k.startswith("APP_")}
    )
    ocr_settings = OcrSettings.model_validate({k.removeprefix("OCR_").lower(): v for k, v in ocr.items() if v})
    assert any("APP_OCR_TRAINING_TOKEN" in p for p in production_problems(backend_settings))
    assert any("OCR_TRAINING_TOKEN" in p for p in ocr_production_problems(ocr_settings))
    # With the token made as the file says, both would start.
    environment["OCR_TRAINING_TOKEN"] = _strong()
    backend = compose.service_environment("backend", environment)
    ocr = compose.service_environment("ocr-service", environment)
    backend_settings = Settings.model_validate(
        {k.removeprefix("APP_").lower(): v for k, v in backend.items() if k.startswith("APP_")}
    )
    ocr_settings = OcrSettings.model_validate({k.removeprefix("OCR_").lower(): v for k, v in ocr.items() if v})
    assert production_problems(backend_settings) == []
    assert ocr_production_problems(ocr_settings) == []


def _run(module: list[str], environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "OCR_"))}
    return subprocess.run(
        [sys.executable, "-m", *module],
        env={**clean, "PYTHONPATH": str(ROOT), **environment},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_backend_refuses_to_start_and_touches_nothing(tmp_path: Path) -> None:
    database = tmp_path / "backend.db"
    started = _run(
        ["backend"],
        {
            "APP_ENV": "production",
            "APP_DATABASE_URL": f"sqlite:///{database}",
            "APP_STORAGE_DIR": str(tmp_path / "storage"),
            "APP_OCR_TRAINING_TOKEN": "changeme-changeme-changeme-changeme",
            "APP_ADMIN_USERNAME": "oma",
            "APP_ADMIN_PASSWORD": "admin-admin-123",
        },
        tmp_path,
    )
    assert started.returncode == 2, started.stderr
    assert "APP_OCR_TRAINING_TOKEN looks like a placeholder" in started.stderr
    assert "APP_ADMIN_PASSWORD looks like a placeholder" in started.stderr
    assert MAKE_ONE in started.stderr
    # Refused before anything was opened: no database, no store.
    assert not database.exists() and not (tmp_path / "storage").exists()


def test_the_ocr_service_refuses_to_start_before_loading_anything(tmp_path: Path) -> None:
    started = _run(
        ["ocr_service", "check-models"],
        {
            "OCR_ENV": "production",
            "OCR_MODELS_DIR": str(tmp_path / "models"),
            "OCR_TRAINING_DIR": str(tmp_path / "training"),
            "OCR_MEMORY_LIMIT_MB": "16384",
        },
        tmp_path,
    )
    assert started.returncode == 2, started.stderr
    assert f"OCR_TRAINING_TOKEN is empty; make one with {MAKE_ONE}" in started.stderr
    assert not (tmp_path / "models" / ".meta").exists()
