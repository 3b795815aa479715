"""Training scalars for TensorBoard, beside ``metrics.csv`` (``repana train --tensorboard``).

    pip install 'repana[tensorboard]'
    repana train --preset quick --out runs/quick --tensorboard
    tensorboard --logdir runs/quick/tensorboard

:class:`TensorBoardLog` receives the rows of ``metrics.csv`` and writes each cell as a scalar tagged
``<split>/<column>`` (``train/loss``, ``train/accuracy``, ``train/elapsed_s``, ``val/accuracy``, ...) at
the same step; empty cells (NaN, no loss) are skipped. It follows resume exactly as ``metrics.csv``
does: on (re)start at checkpoint step ``s`` it opens a new event file with ``purge_step = s + 1``, so
TensorBoard drops the events of steps after ``s`` that a killed run had written, and every step
appears once.
"""

from __future__ import annotations

import math
from pathlib import Path

from repana.errors import ConfigError

__all__ = ["TensorBoardLog", "check_tensorboard"]

INSTALL_HINT = "pip install 'repana[tensorboard]' (or: pip install tensorboard)"


def check_tensorboard() -> None:
    """Raise :class:`ConfigError` (one line, with the install command) when ``tensorboard`` is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(f"TensorBoard logging needs the tensorboard package, which is not installed: "
                          f"{INSTALL_HINT}") from None


class TensorBoardLog:
    """A metrics sink for :func:`repana.meta.train.train` (``loggers=[TensorBoardLog(dir)]``) that
    writes TensorBoard event files into ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        check_tensorboard()
        self.log_dir = Path(log_dir)
        self._writer = None

    def reset(self, keep_through_step: int) -> None:
        """Start writing; events of steps after ``keep_through_step`` (from a killed run) are purged."""
        from torch.utils.tensorboard import SummaryWriter

        self.close()
        self._writer = SummaryWriter(str(self.log_dir), purge_step=int(keep_through_step) + 1)

    def append(self, step: int, split: str, loss: float | None, accuracy: float | None, elapsed: float) -> None:
        """One ``metrics.csv`` row: its non-empty cells as scalars at ``step``."""
        if self._writer is None:
            self.reset(0)
        for column, value in (("loss", loss), ("accuracy", accuracy), ("elapsed_s", elapsed)):
            if value is not None and math.isfinite(float(value)):
                self._writer.add_scalar(f"{split}/{column}", float(value), int(step))
        self._writer.flush()  # as metrics.csv: a killed run keeps what it logged

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
