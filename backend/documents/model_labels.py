"""Which model read a page or a line, in words for people.

A page and its lines record the name and version of the model that read them, as the OCR
service named it. A name a training run installed says more: a writer run's model is that
writer's ("Anna Müller's model (v3)"), a recognition run's is the archive's ("Archive model
(v2)"); any other model goes by its name. The run and its writer are joined onto the query
that reads the pages or lines (outer joins, one query for all of them, no query per row).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, SQLColumnExpression, String, bindparam, func, select
from sqlalchemy.orm import Session, aliased

from backend.documents.models import Writer
from backend.documents.schemas import ModelOut, WriterOut
from backend.ocr.models import DEFAULT_MODEL
from backend.training.models import RunStatus, TrainingKind, TrainingRun

_LABELLED = (TrainingKind.RECOGNITION, TrainingKind.WRITER)


@dataclass(frozen=True)
class ModelRead:
    """``model`` and ``modelLabel`` of a page or line (both None while nothing has read it)."""

    model: ModelOut | None
    label: str | None


# Any select: the columns added come after the caller's own.
AnySelect = Select[*tuple[Any, ...]]


# Built once: an alias's columns are worked out (and memoized) on the alias object, and doing
# that afresh for every query was half the CPU of reading a document's lines
# (bench/profile_api.py). Shared by every query; each query joins them at most once.
_LATEST_RUNS = (
    select(TrainingRun.model_name, func.max(TrainingRun.id).label("run_id"))
    .where(TrainingRun.status == RunStatus.DONE, TrainingRun.kind.in_(_LABELLED))
    .group_by(TrainingRun.model_name)
    .subquery("latest_model_run")
)
_RUN = aliased(TrainingRun, name="model_run")
_WRITER = aliased(Writer, name="model_writer")


def with_model_runs(statement: AnySelect, name: SQLColumnExpression[Any]) -> AnySelect:
    """``statement`` with four columns more: the kind and sequence of the finished run that
    installed the model named by ``name`` (None: no run did), its writer's id, slug and name.

    A run's model is installed under a name of its own; should two finished runs carry one name
    (a run repeated under its name), the latest counts, so each row of ``statement`` stays one row."""
    return (
        statement.add_columns(_RUN.kind, _RUN.sequence, _WRITER.id, _WRITER.slug, _WRITER.name)
        .outerjoin(_LATEST_RUNS, _LATEST_RUNS.c.model_name == name)
        .outerjoin(_RUN, _RUN.id == _LATEST_RUNS.c.run_id)
        .outerjoin(_WRITER, _WRITER.id == _RUN.writer_id)
    )


def writer_model_label(writer_name: str, model_name: str, sequence: int | None) -> str:
    """ "Anna Müller's model (v3)"; the model's name where no run is known for it."""
    return f"{writer_name}'s model (v{sequence})" if sequence is not None else model_name


def model_read(name: str | None, version: str | None, run_columns: tuple[Any, ...]) -> ModelRead:
    """The model (from a page's or line's name and version and the five columns
    :func:`with_model_runs` added) and its label."""
    if name is None:
        return ModelRead(None, None)
    kind, sequence, writer_id, slug, writer_name = run_columns
    writer = WriterOut(id=writer_id, slug=slug, name=writer_name) if writer_id is not None else None
    if kind is TrainingKind.WRITER and writer is not None:
        label = writer_model_label(writer.name, name, sequence)
    elif kind is TrainingKind.RECOGNITION:
        label = f"Archive model (v{sequence})"
    elif name == DEFAULT_MODEL:
        # The OCR service named no model (an older one): its default model at the time.
        label = "Default model"
    else:
        label = name
    run_sequence = sequence if kind is not None else None
    return ModelRead(ModelOut(name=name, version=version, writer=writer, run_sequence=run_sequence), label)


@cache
def _describe_statement() -> AnySelect:
    # Built once (on first use: the mappers are all configured by then), executed with the name
    # as its parameter; SQLAlchemy's cache key is then memoized on the statement too.
    named = select(bindparam("model_name", type_=String()).label("name")).subquery("named_model")
    return with_model_runs(select(named.c.name), named.c.name)


def describe(session: Session, name: str | None, version: str | None) -> ModelRead:
    """:func:`model_read` for one name, in a query of its own (one page reviewed)."""
    if name is None:
        return ModelRead(None, None)
    row = session.execute(_describe_statement(), {"model_name": name}).one()
    return model_read(name, version, tuple(row)[1:])
