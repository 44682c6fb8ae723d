"""A run directory's logs: ``metrics.jsonl`` (per epoch), ``steps.jsonl`` (per N steps), TensorBoard.

Only rank 0 writes (a :class:`RunLog` made with ``enabled=False`` does nothing). On resume,
lines written after the checkpoint being resumed from are dropped (:meth:`RunLog.trim`):
they are redone, so no epoch or step is logged twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nic.io import atomic_write_text

LOGS = (("metrics.jsonl", "epoch"), ("steps.jsonl", "step"))


class RunLog:
    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.writer: Any = None

    def start(self, *, resumed_at: tuple[int, int] | None, tensorboard: bool) -> None:
        """Empty the logs of a new run, or trim a resumed one's to its (epoch, step); open TensorBoard."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for (name, key), limit in zip(LOGS, resumed_at or (None, None)):
            path = self.run_dir / name
            if resumed_at is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                lines = [line for line in path.read_text().splitlines() if line.strip()]
                atomic_write_text(path, "".join(line + "\n" for line in lines if json.loads(line)[key] <= limit))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return  # optional: metrics.jsonl is always written
            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def step(self, *, step: int, epoch: int, loss: float, lr: float, **extra: float) -> None:
        """Append the global (all-process) training loss of a step (and ``extra`` figures, e.g. SCST's
        mean reward) to steps.jsonl."""
        if not self.enabled:
            return
        with open(self.run_dir / "steps.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr, **extra}) + "\n")
        if self.writer is not None:
            for name, value in {"loss": loss, **extra}.items():
                self.writer.add_scalar(f"train/{name}", value, step)

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self.writer.add_scalar(k.replace("val_", "val/"), v, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
