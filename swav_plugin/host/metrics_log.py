"""The run's ``metrics.csv``, continued (not wiped) when the run resumes.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, so a resumed run
would lose the curves of everything before the interruption. Here the rows of the steps the
checkpoint covers are kept, the rows of steps after it (which the resumed run trains again)
are dropped, and the run appends from there; the file is rewritten atomically. Rows are
written as they are logged, and a step's or epoch's row before the checkpoint that covers it
(see :class:`~swav_plugin.host.checkpointing.Checkpoints`), so a kill loses none of the rows a
checkpoint covers; a new column rewrites the file atomically (Lightning: in place).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from swav_plugin.host.atomic import write_atomic


def _logged_before(row: dict[str, Any], step: int) -> bool:
    value = row.get("step")
    try:
        return int(float(value)) < step
    except (TypeError, ValueError):
        return False  # a row without a step cannot be placed: drop it


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    def write(file: Any) -> None:
        writer = csv.DictWriter(file, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(path, write)


class _ContinuingWriter(ExperimentWriter):
    """Keeps the rows of steps before ``resume_step`` of an existing metrics file."""

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)  # calls _check_log_dir_exists

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [row for row in reader if _logged_before(row, self.resume_step)]
            keys = list(reader.fieldnames or [])
        _write_rows(path, keys, rows)
        self.metrics_keys = keys

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        # Lightning rewrites the file in place when a column appears: a kill then would
        # truncate it
        path = Path(self.metrics_file_path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows(path, fieldnames, rows)


class RunLogger(CSVLogger):
    """CSV logging to ``save_dir/metrics.csv`` that continues the file of a resumed run.

    Args:
        save_dir: The run directory.
        resume_step: The global step of the checkpoint the run resumes from (0: a new run;
            the rows of an existing file are then dropped).
    """

    def __init__(self, save_dir: Path, resume_step: int = 0) -> None:
        # rows go to the file as they are logged (Lightning's default: every 100 steps), so a
        # kill loses none of the steps its checkpoint covers
        super().__init__(save_dir=save_dir, name="", version="", flush_logs_every_n_steps=1)
        self.resume_step = resume_step
        self._last_row: str | None = None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        # a step's row is logged early when a checkpoint covers it (see Checkpoints); the
        # training loop's repeat of that row is dropped (repr: exact, and NaN equals NaN)
        row = repr((step, sorted(metrics.items())))
        if row == self._last_row:
            return
        self._last_row = row
        super().log_metrics(metrics, step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self.resume_step)
        return self._experiment
