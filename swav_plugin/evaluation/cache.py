"""On-disk cache of extracted features, keyed by everything that produced them.

The key is a SHA-256 over the checkpoint's bytes, the data set node and split, the evaluation
transform, what was extracted (backbone features or embeddings), the initialisation (trained
or random with its seed) and the number of samples. A cache file holds its own key and a
checksum of its tensors; a file that cannot be read, belongs to another key or fails its
checksum is reported and rebuilt, never used. Files are written through a temporary file and a
rename, and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from swav_plugin.host.atomic import atomic_path

_FORMAT = 1


def cache_key(parts: dict[str, Any]) -> str:
    """A stable hex key of JSON-serialisable ``parts`` (order of keys irrelevant)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _checksum(features: Tensor, labels: Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (features, labels):
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Features and labels stored as ``DIRECTORY/KEY.pt``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> tuple[Tensor, Tensor] | None:
        """The cached tensors of ``key``, or ``None`` when absent or unusable (then warns)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            problem = self._problem(entry, key)
        except Exception as exc:  # truncated or not a torch file: rebuild it
            problem = f"unreadable ({type(exc).__name__})"
        if problem:
            warnings.warn(f"feature cache {path} is {problem}; extracting again", stacklevel=2)
            return None
        return entry["features"], entry["labels"]

    @staticmethod
    def _problem(entry: Any, key: str) -> str:
        if not isinstance(entry, dict) or entry.get("format") != _FORMAT:
            return "of an unknown format"
        if entry.get("key") != key:
            return "stale (written for another checkpoint, data set or transform)"
        features, labels = entry.get("features"), entry.get("labels")
        if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
            return "missing its tensors"
        if entry.get("checksum") != _checksum(features, labels):
            return "corrupt (checksum mismatch)"
        return ""

    def save(self, key: str, features: Tensor, labels: Tensor) -> Path:
        """Store the tensors of ``key`` atomically; returns the file's path."""
        path = self.path(key)
        entry = {"format": _FORMAT, "key": key, "features": features, "labels": labels,
                 "checksum": _checksum(features, labels)}
        with atomic_path(path) as tmp:
            torch.save(entry, tmp)
        return path
