"""What vaelab tells the user while it works: progress bars on a terminal, log lines elsewhere.

Everything goes through the standard ``logging`` logger ``"vaelab"`` (a library does not
configure logging; the CLI does, with :func:`configure`). Progress bars (tqdm) are drawn only
when stderr is a terminal or a notebook: written to a file or a pipe, their carriage-return
redraws would bury the one line per epoch that makes a long run's log readable and
greppable. There, a long loop reports a few log lines instead (:class:`LogProgress`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("vaelab")

# verbosity set by the CLI: -1 quiet (warnings only, no bars), 0 normal, 1 verbose (debug)
_state = {"verbosity": 0}


def interactive(stream: Any = None) -> bool:
    """True where a progress bar can redraw in place: a terminal, or a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


class _Handler(logging.StreamHandler):
    """A handler on the current ``sys.stderr`` (or a given stream); on a terminal it prints
    above a live tqdm bar instead of through it."""

    def __init__(self, stream: Any = None, *, bars: bool = False):
        super().__init__(stream or sys.stderr)
        self.follow, self.bars = stream is None, bars

    def emit(self, record: logging.LogRecord) -> None:
        if self.follow:  # sys.stderr may have been replaced since (tests, notebooks)
            self.stream = sys.stderr
        if not self.bars:
            return super().emit(record)
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never break the run
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def configure(verbosity: int = 0, stream: Any = None) -> None:
    """Send vaelab's log to ``stream`` (default stderr) at INFO; -1 (``--quiet``) shows only
    warnings and draws no bars, 1 (``--verbose``) adds debug lines. Idempotent."""
    unconfigure()
    _state["verbosity"] = verbosity
    tty = interactive(stream)
    handler = _Handler(stream, bars=tty)
    # a file or pipe gets timestamps: it is read later, often beside other logs
    fmt = "%(message)s" if tty else "%(asctime)s %(message)s"
    handler.setFormatter(_Formatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    handler._vaelab = True  # type: ignore[attr-defined]
    LOGGER.addHandler(handler)
    LOGGER.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))


def unconfigure() -> None:
    """Undo :func:`configure` (``cli.main`` called from Python leaves logging as it was)."""
    _state["verbosity"] = 0
    for handler in list(LOGGER.handlers):
        if getattr(handler, "_vaelab", False):
            LOGGER.removeHandler(handler)
    LOGGER.setLevel(logging.NOTSET)


class NullBar:
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass


class LogProgress(NullBar):
    """Progress as log lines for files and pipes: one line each time another ``step`` of
    the total is done, once the loop has run ``after`` seconds (short loops stay silent)."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, step: float = 0.1,
                 after: float = 5.0):
        self.total, self.desc, self.count = max(int(total), 1), desc, initial
        self.step, self.after = step, after
        self.start = time.perf_counter()
        self.next = (int(initial / self.total / step) + 1) * step

    def update(self, n: int = 1) -> None:
        self.count += n
        done = self.count / self.total
        if done + 1e-12 < self.next:
            return
        self.next = (int(done / self.step + 1e-9) + 1) * self.step
        elapsed = time.perf_counter() - self.start
        if elapsed < self.after:
            return
        left = elapsed * (1 - done) / done if done > 0 else float("nan")
        LOGGER.info(f"{self.desc}: {self.count}/{self.total} ({100 * done:.0f}%), "
                    f"{elapsed:.0f} s, about {left:.0f} s left")


def progress(total: int, desc: str, *, enabled: bool = True, initial: int = 0,
             log_lines: bool = False) -> Any:
    """A tqdm bar on a terminal; elsewhere log lines (``log_lines``) or nothing.

    Loops that log a line of their own when done (a training epoch) pass
    ``log_lines=False``; long evaluations pass True so a log file shows they are alive.
    """
    if not enabled or _state["verbosity"] < 0:
        return NullBar()
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
    return LogProgress(total, desc, initial=initial) if log_lines else NullBar()
