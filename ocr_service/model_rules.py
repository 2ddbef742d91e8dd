"""The rules every change to the model store follows, in one place.

The store, the admin (HTTP and command line) and training all ask here, so a name, the
packaged model or a kind is judged the same way whoever asks.
"""

from __future__ import annotations

from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import PACKAGED_SEGMENTATION
from ocr_service.settings import MODEL_NAME_PATTERN


def check_model_name(name: str) -> str:
    """A name that can be a file name in the store and nothing else (no paths, no dots)."""
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.fullmatch(name):
        raise AppError(
            ErrorCode.INVALID_MODEL_NAME,
            "A model name may contain only lowercase letters, digits and '-' (at most 64 characters), "
            "and must start and end with a letter or digit.",
        )
    return name


def known_model_name(name: str, code: ErrorCode = ErrorCode.MODEL_NOT_FOUND) -> str:
    """A name looked up (not created): a malformed one is simply not there."""
    try:
        return check_model_name(name)
    except AppError as exc:
        raise AppError(code, f"There is no model named '{name}'.") from exc


def check_new_model_name(name: str) -> str:
    """A name a model may be installed or trained under: never the packaged model's."""
    check_model_name(name)
    if name == PACKAGED_SEGMENTATION:
        raise AppError(ErrorCode.MODEL_PROTECTED, f"'{name}' is the packaged segmentation model's name.")
    return name


def check_may_install(name: str, exists: bool, replace: bool) -> None:
    """A name that exists already takes a new version only when the caller says so."""
    if exists and not replace:
        raise AppError(
            ErrorCode.MODEL_EXISTS,
            f"A model named '{name}' exists already; send replace=true to install a new version.",
        )


def check_kind(name: str, actual: str | None, wanted: str, role: str | None = None) -> None:
    """A model used as ``wanted`` (recognition/segmentation) must be of that kind.

    ``role`` says why the kind is fixed ("the default recognition model"); an unknown kind
    (a file not inspected yet) passes here and is judged when it is loaded.
    """
    if actual is None or actual == wanted:
        return
    if role is not None:
        message = f"'{name}' is {role}; a new version must be a {wanted} model, not a {actual} model."
    else:
        message = f"'{name}' is a {actual} model, not a {wanted} model."
    raise AppError(ErrorCode.WRONG_MODEL_KIND, message)


def check_removable(name: str, *, protected_by: str | None, chosen_as: str | None, in_use_by: str | None) -> None:
    """What keeps a model in the store: the packaged model, the operator's setting, an admin's
    choice, a training job. Documents being read do not: they read their pinned copy."""
    if name == PACKAGED_SEGMENTATION:
        raise AppError(ErrorCode.MODEL_PROTECTED, "The packaged segmentation model cannot be removed.")
    if protected_by is not None:
        raise AppError(ErrorCode.MODEL_PROTECTED, f"'{name}' is {protected_by}; it cannot be removed.")
    if chosen_as is not None:
        raise AppError(ErrorCode.MODEL_IS_DEFAULT, f"'{name}' is {chosen_as} before removing it.")
    if in_use_by is not None:
        raise AppError(ErrorCode.MODEL_IN_USE, f"'{name}' is used by {in_use_by}.")
