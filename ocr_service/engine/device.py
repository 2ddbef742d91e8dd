"""Where kraken runs: ``OCR_DEVICE`` ("cpu", "cuda" or "cuda:N") as kraken's and Lightning's flags.

kraken 7.1.1's configs take Lightning's pair: ``accelerator`` ("cpu", "gpu") and ``device``
("auto", or a list of device indices); ``device="cpu"`` is a TypeError there (KRAKEN.md).
One device per process: a worker or a trainer is given one GPU, never spread over several.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d{1,3}))?$")


@dataclass(frozen=True)
class Device:
    accelerator: Literal["cpu", "gpu"]
    # The CUDA device index; None on the CPU.
    index: int | None = None

    @property
    def lightning_devices(self) -> list[int] | Literal["auto"]:
        """kraken's ``device`` and Lightning's ``devices``: the one GPU, or "auto" on the CPU."""
        return "auto" if self.index is None else [self.index]

    @property
    def name(self) -> str:
        return "cpu" if self.index is None else f"cuda:{self.index}"


CPU = Device("cpu")


def parse_device(text: str) -> Device:
    """``cpu``, ``cuda`` (the first GPU) or ``cuda:N``; anything else is a ValueError."""
    match = _PATTERN.fullmatch(text.strip().lower())
    if match is None or (match[1] == "cpu" and match[2] is not None):
        raise ValueError(f"must be 'cpu', 'cuda' or 'cuda:N' (a GPU's index), got {text!r}")
    if match[1] == "cpu":
        return CPU
    return Device("gpu", int(match[2] or 0))


def check_device(device: Device) -> None:
    """Refuse at start a GPU this torch cannot use, rather than fail every page later.

    Imports torch: called by the service's start-up and its workers, never by Settings.
    """
    if device.index is None:
        return
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        raise ValueError(
            f"OCR_DEVICE={device.name} asks for a GPU, but torch {torch.__version__} ({build}) sees none: "
            "build the image with the CUDA wheels (TORCH_INDEX_URL) and give the container the GPU "
            "(docs/deployment-reference.md, GPU), or set OCR_DEVICE=cpu"
        )
    count = torch.cuda.device_count()
    if device.index >= count:
        raise ValueError(f"OCR_DEVICE={device.name}: torch sees {count} GPU(s), numbered from 0")
