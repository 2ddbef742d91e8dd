"""Segmentation models for tests: the packaged blla as safetensors, and a copy that finds no lines.

The "blind" copy has the same network, but its last layer always answers "no baseline here",
so a page read with it has no lines: whether the workers used it is plain to see in the result.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from ocr_service.engine.pipeline import packaged_segmentation_model

# blla's output layer: a 1x1 convolution named ``…nn.l_<index>.co``, the highest index of its kind.
_OUTPUT_LAYER = re.compile(r"\.nn\.l_(\d+)\.co\.(weight|bias)$")


def packaged_as_safetensors(target: Path) -> Path:
    """blla converted with kraken's own converter (CoreML → safetensors), about 6 s."""
    from kraken.models.convert import convert_models

    written = Path(str(convert_models([packaged_segmentation_model()], target, weights_format="safetensors")))
    if written != target:
        written.replace(target)
    return target


def blind_copy(source: Path, target: Path) -> Path:
    """``source`` (a safetensors segmentation model) with its output layer set to 'never a line'."""
    data = bytearray(source.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    layers: dict[int, dict[str, dict[str, list[int]]]] = {}
    for key, tensor in header.items():
        match = _OUTPUT_LAYER.search(key)
        if match and tensor["dtype"] == "F32":
            layers.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    output = layers[max(layers)]
    assert output.keys() == {"weight", "bias"}, output
    base = 8 + header_len
    # weight 0 and bias -30: every class's probability is sigmoid(-30) ≈ 0 on every pixel
    for part, value in (("weight", 0.0), ("bias", -30.0)):
        start, end = output[part]["data_offsets"]
        data[base + start : base + end] = struct.pack(f"<{(end - start) // 4}f", *[value] * ((end - start) // 4))
    target.write_bytes(bytes(data))
    return target
