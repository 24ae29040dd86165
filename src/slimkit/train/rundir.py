"""Run directories: ``runs/<name>/`` with checkpoints, metrics, logs and plots.

A directory that already holds a run is never reused silently: pass ``force`` to replace
its files or ``resume`` to continue it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from slimkit.errors import InvalidArgumentError
from slimkit.train.checkpoint import OutputExistsError

__all__ = ["RunDir", "RUN_MARKERS"]

#: files whose presence means "this directory holds a run"
RUN_MARKERS = ("last.safetensors", "model.safetensors", "metrics.json", "log.jsonl")


class RunDir:
    """A run directory; ``log`` appends one JSON line per event to ``log.jsonl``.

    ``create=False`` only checks the rules; the directory then appears with the first file
    written, so a command that fails early leaves nothing behind."""

    def __init__(self, path: str | Path, *, resume: bool = False, force: bool = False,
                 is_main: bool = True, create: bool = True) -> None:
        self.path = Path(path)
        self.is_main = is_main
        if self.path.exists() and not self.path.is_dir():
            raise InvalidArgumentError(f"{self.path} is a file; --out needs a directory")
        has_run = any((self.path / m).exists() for m in RUN_MARKERS)
        if not is_main:
            return  # rank 0 checks and creates; other ranks may race with its first writes
        if resume:
            if not (self.path / "last.safetensors").exists():
                raise InvalidArgumentError(
                    f"nothing to resume in {self.path} (no last.safetensors); drop --resume"
                )
        elif has_run and not force:
            raise OutputExistsError(
                f"{self.path} already holds a run; use --resume to continue it, --force to "
                "replace it, or another --out"
            )
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        if has_run and force and not resume:
            (self.path / "log.jsonl").unlink(missing_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (plus a UTC timestamp) as one JSON line."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        line = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **record}
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
