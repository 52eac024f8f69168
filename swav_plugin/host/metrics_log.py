"""The run's ``metrics.csv``, continued (not wiped) when the run resumes.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, so a resumed run
would lose the curves of everything before the interruption. :class:`RunLogger`, a logger on
Lightning's public ``Logger`` interface, keeps the rows of the steps the checkpoint covers,
drops the rows of steps after it (which the resumed run trains again) and appends from
there. Each row reaches the file as it is logged, and a step's or epoch's row is logged
before the checkpoint that covers it (see :class:`~swav_plugin.host.checkpoints.Checkpoints`),
so a kill loses none of the rows a checkpoint covers. Whenever the file is rewritten (on
resume, or when a new column appears) it is rewritten atomically. The columns are those of
Lightning's CSV logger: the metric names and ``step``, sorted.
"""

from __future__ import annotations

import csv
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from swav_plugin.host.atomic import atomic_path, write_atomic

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"


def _logged_before(row: Mapping[str, Any], step: int) -> bool:
    value = row.get("step")
    try:
        return int(float(value)) < step
    except (TypeError, ValueError):
        return False  # a row without a step cannot be placed: drop it


def _write_rows(path: Path, columns: list[str], rows: list[Mapping[str, Any]]) -> None:
    def write(file: Any) -> None:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(path, write)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


class RunLogger(Logger):
    """CSV logging to ``save_dir/metrics.csv`` that continues the file of a resumed run.

    Args:
        save_dir: The run directory.
        resume_step: The global step of the checkpoint the run resumes from (0: a new run;
            the rows of an existing file are then dropped); :meth:`continue_from` sets it
            later, once the runner knows the checkpoint.
    """

    def __init__(self, save_dir: Path, resume_step: int = 0) -> None:
        super().__init__()
        self.directory = Path(save_dir)
        self.resume_step = resume_step
        self._columns: list[str] | None = None  # the file's header, once it is opened
        self._last_row: str | None = None

    def continue_from(self, step: int) -> None:
        """Continue the file of a run resumed from the checkpoint of global step ``step``
        (before the first row: the file is opened then)."""
        if self._columns is not None:
            raise RuntimeError("RunLogger.continue_from after the first row was written")
        self.resume_step = step

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.directory)

    @property
    def log_dir(self) -> str:
        return str(self.directory)

    @property
    def metrics_path(self) -> Path:
        """The CSV file."""
        return self.directory / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any,
                        **kwargs: Any) -> None:
        hparams = vars(params) if isinstance(params, Namespace) else dict(params)
        with atomic_path(self.directory / HPARAMS_FILE) as tmp:
            save_hparams_to_yaml(tmp, hparams)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = {key: value.item() if isinstance(value, Tensor) else value
               for key, value in metrics.items()}
        # a step's row is logged early when a checkpoint covers it (see Checkpoints); the
        # training loop's repeat of that row is dropped (repr: exact, and NaN equals NaN)
        key = repr((step, sorted(row.items())))
        if key == self._last_row:
            return
        self._last_row = key
        row["step"] = step
        self._append(row)

    def _append(self, row: dict[str, Any]) -> None:
        path = self.metrics_path
        if self._columns is None:
            self._columns = self._continue_file()
        columns = sorted(set(self._columns) | set(row))
        if columns != self._columns:
            # a new column: the whole file again, with the new header
            rows = _read_rows(path)[1] if path.is_file() else []
            _write_rows(path, columns, [*rows, row])
            self._columns = columns
            return
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=columns).writerow(row)

    def _continue_file(self) -> list[str]:
        """Keep the rows before :attr:`resume_step` of an existing file; its columns."""
        path = self.metrics_path
        if not path.is_file():
            return []
        columns, rows = _read_rows(path)
        _write_rows(path, columns, [row for row in rows if _logged_before(row, self.resume_step)])
        return columns
