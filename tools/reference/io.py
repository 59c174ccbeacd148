"""Checkpoint folders (`config.json` + `model.safetensors`): load into the reference, save from it atomically."""
from __future__ import annotations

import json
import os
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import from_json
from .model import Model


def load(path: str, dtype=torch.float32) -> Model:
    """Builds the reference model of a checkpoint folder; tensors are converted to `dtype` (float32 by default)."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    tensors = {}
    with safe_open(os.path.join(path, "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            tensors[name] = f.get_tensor(name).to(dtype)
    model = Model(from_json(cfg, tensors.keys())).to(dtype)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    model.eval()
    return model


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save(model: Model, config: dict, path: str, dtype=torch.float32) -> None:
    """Writes `config.json` and `model.safetensors` (tied models store only the embedding) in `dtype`."""
    os.makedirs(path, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sorted(model.state_dict().items())}
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(path, "model.safetensors"))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    write_json(os.path.join(path, "config.json"), config)
