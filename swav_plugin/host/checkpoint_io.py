"""Lightning's checkpoint I/O through the verified files of :mod:`.checkpoint_files`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.plugins import TorchCheckpointIO

from swav_plugin.host.checkpoint_files import digest_path, read_checkpoint, write_checkpoint


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O through :func:`write_checkpoint` and :func:`read_checkpoint`."""

    def __init__(self) -> None:
        self._preloaded: tuple[Path, dict[str, Any]] | None = None

    def preload(self, path: Path, checkpoint: dict[str, Any]) -> None:
        """Hand over a checkpoint already read and verified: its first load returns it."""
        self._preloaded = (path, checkpoint)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        write_checkpoint(checkpoint, Path(path))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if self._preloaded is not None and Path(path).resolve() == self._preloaded[0].resolve():
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        return read_checkpoint(path, map_location or "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
        digest_path(Path(path)).unlink(missing_ok=True)
