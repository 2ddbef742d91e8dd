"""``python -m ocr_service models …``: the operator's way to manage the model store.

The same checks as ``POST /models`` (:class:`ModelAdmin`), on the store the service reads
(``OCR_MODELS_DIR``); a running service uses a change with its next request.
Exit codes: 0 done, 1 refused (the message says why), 2 wrong usage or settings,
3 kraken's model repository cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from ocr_service.engine.repository import KrakenRepository
from ocr_service.errors import AppError
from ocr_service.model_repository import (
    ModelRepository,
    RepositoryUnavailableError,
    parse_doi,
    slug_from_filename,
)
from ocr_service.models_admin import InstallRequest, ModelAdmin
from ocr_service.settings import Settings
from ocr_service.store import ModelStore

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_NETWORK = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ocr_service models",
        description="Manage the OCR service's model store (OCR_MODELS_DIR).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="list the models, their kind, line type and scores")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = commands.add_parser("show", help="describe one model as JSON")
    show.add_argument("name")
    install = commands.add_parser(
        "install",
        help="install a model file, or a model from kraken's repository by DOI",
        description="SOURCE is a .mlmodel/.safetensors file, or a DOI of kraken's model repository "
        "(e.g. 10.5281/zenodo.7933463, German handwriting), downloaded when the host has network.",
    )
    install.add_argument("source", metavar="PATH_OR_DOI")
    install.add_argument("--name", help="the model's name (default: derived from the file name)")
    install.add_argument("--default", action="store_true", help="make it the default recognition model")
    install.add_argument("--replace", action="store_true", help="replace a model of the same name (kept as backup)")
    default = commands.add_parser("default", help="choose the default recognition model")
    default.add_argument("name")
    segmentation = commands.add_parser(
        "segmentation",
        help="choose the segmentation model OCR finds lines with",
        description="The running service uses the chosen segmentation model from its next page on. "
        "--reset goes back to OCR_SEGMENTATION_MODEL (or the packaged model, blla).",
    )
    which = segmentation.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?")
    which.add_argument("--reset", action="store_true", help="go back to OCR_SEGMENTATION_MODEL or blla")
    remove = commands.add_parser("remove", help="remove a model (its backups stay in .backups/)")
    remove.add_argument("name")
    return parser


def main(
    argv: list[str],
    *,
    settings: Settings | None = None,
    repository: ModelRepository | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one ``models`` command; ``settings`` and ``repository`` are injectable for tests."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and why
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        settings = settings or Settings()
    except (ValidationError, ValueError) as exc:
        print(f"The settings (OCR_*) are not valid:\n{exc}", file=err)
        return EXIT_USAGE
    store = ModelStore(settings.models_dir, settings.default_model, segmentation_model=settings.segmentation_model)
    admin = ModelAdmin.from_settings(settings, store, models_in_training(settings))
    # The operator's own command: a file placed by hand is inspected at once, so the list is complete.
    store.watch_unchecked(admin.inspector.inspect)
    try:
        return _run(args, admin, repository or KrakenRepository(), out, err)
    except AppError as exc:
        print(f"Refused ({exc.code.value}): {exc.message}", file=err)
        return EXIT_REFUSED
    except RepositoryUnavailableError as exc:
        print(str(exc), file=err)
        return EXIT_NO_NETWORK


def models_in_training(settings: Settings) -> Callable[[], set[str]]:
    """Models that unfinished training jobs read or write, from the jobs the service persists:
    the command line runs beside the service and must not remove a model from under a job."""

    def names() -> set[str]:
        if not settings.training_dir.is_dir():
            return set()
        from ocr_service.training.jobs import JobStore

        return {
            name
            for job in JobStore(settings.training_dir).all()
            if not job.status.finished
            for name in (job.model_name, job.base_model)
            if name
        }

    return names


def _run(args: argparse.Namespace, admin: ModelAdmin, repository: ModelRepository, out: TextIO, err: TextIO) -> int:
    if args.command == "list":
        entries = admin.entries()
        if args.json:
            print(json.dumps(entries, indent=1, ensure_ascii=False), file=out)
        else:
            _print_table(entries, out)
        return EXIT_OK
    if args.command == "show":
        print(json.dumps(admin.describe(args.name), indent=1, ensure_ascii=False), file=out)
        return EXIT_OK
    if args.command == "install":
        return _install(args, admin, repository, out, err)
    if args.command == "default":
        admin.set_default(args.name)
        print(f"'{args.name}' is now the default recognition model.", file=out)
        return EXIT_OK
    if args.command == "segmentation":
        chosen = admin.set_segmentation(None if args.reset else args.name)
        print(f"OCR now finds lines with the segmentation model '{chosen['name']}'.", file=out)
        return EXIT_OK
    if args.command == "remove":
        admin.remove(args.name)
        print(f"Removed '{args.name}'.", file=out)
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")


def _install(args: argparse.Namespace, admin: ModelAdmin, repository: ModelRepository, out: TextIO, err: TextIO) -> int:
    path = Path(args.source).expanduser()
    doi = None if path.exists() else parse_doi(args.source)
    if doi is None:
        if not path.is_file():
            print(f"{args.source} is neither a model file nor a DOI (such as 10.5281/zenodo.7933463).", file=err)
            return EXIT_REFUSED
        name = args.name or slug_from_filename(path.name)
        if not name:
            print(f"No model name can be made from '{path.name}'; give one with --name.", file=err)
            return EXIT_REFUSED
        request = InstallRequest(name=name, replace=args.replace, make_default=args.default)
        described = admin.install_file(path, request, source="uploaded")
    else:
        print(f"Downloading {doi} from kraken's model repository …", file=err)
        described = admin.install_from_repository(
            doi, repository, name=args.name, replace=args.replace, make_default=args.default
        )
    print(_summary(described), file=out)
    return EXIT_OK


def _summary(m: dict[str, Any]) -> str:
    what = m["kind"] or "model"
    if m["kind"] == "recognition":
        what += f", line type {m['lineType']}, {m['alphabetSize']} characters, input height {m['inputHeight']} px"
    default = "; it is the default recognition model" if m["default"] else ""
    return f"Installed '{m['name']}' version {m['version']} ({what}){default}."


def _print_table(entries: list[dict[str, Any]], out: TextIO) -> None:
    header = ("NAME", "KIND", "LINE TYPE", "SOURCE", "VERSION", "SIZE", "ACCURACY", "USED BY OCR")
    rows = [header]
    for m in entries:
        accuracy = f"{m['accuracy']:.3f}" if isinstance(m.get("accuracy"), (int, float)) else "-"
        rows.append(
            (
                m["name"],
                m["kind"] or f"unusable: {m.get('problem') or 'unknown'}",
                m["lineType"] or "-",
                m["source"],
                str(m["version"]),
                f"{m['size'] / 1024 / 1024:.1f} MB",
                accuracy,
                "default" if m["default"] else "segmentation" if m["segmentation"] else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
