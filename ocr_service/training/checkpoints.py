"""Choosing the best checkpoint of a run from kraken's file names.

kraken's ModelCheckpoint writes ``checkpoint_{epoch:02d}-{score:.4f}.ckpt`` (the 10 best are
kept) and ``checkpoint_abort.ckpt`` when training dies. The score is the validation metric
(recognition: character accuracy; segmentation: mean IoU). Names that do not match, scores
that are not finite, links and anything outside the run's own folder are ignored: only our
own trainer's checkpoints, in the job's own folder, are ever unpickled.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^checkpoint_(?P<epoch>\d{1,6})-(?P<score>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\.ckpt$")


@dataclass(frozen=True, order=True)
class Checkpoint:
    score: float
    epoch: int
    path: Path


def parse_checkpoint_name(name: str) -> tuple[int, float] | None:
    """``(epoch, score)`` of a checkpoint file name, or None if it is not one of kraken's scored names."""
    match = _NAME.match(name)
    if match is None:
        return None
    score = float(match.group("score"))
    if not math.isfinite(score):
        return None
    return int(match.group("epoch")), score


def scored_checkpoints(directory: Path) -> list[Checkpoint]:
    root = directory.resolve()
    found = []
    if not root.is_dir():
        return []
    for path in root.iterdir():
        parsed = parse_checkpoint_name(path.name)
        if parsed is None or path.is_symlink() or not path.is_file():
            continue
        if path.resolve().parent != root:
            continue
        found.append(Checkpoint(score=parsed[1], epoch=parsed[0], path=path))
    return found


def best_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint with the highest validation score; on a tie the earlier epoch (as kraken keeps it)."""
    candidates = scored_checkpoints(directory)
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.score, -c.epoch))
