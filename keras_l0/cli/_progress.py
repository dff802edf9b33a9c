"""Progress lines and error output of `keras-l0-shrink`."""

import contextlib
import os
import sys
import threading
import time

from keras_l0.cli._common import PROG


class _Progress:
    """One line per step on `stream`: a live timer on a terminal, a start
    and an end line otherwise."""

    _SPINNER = "|/-\\"

    def __init__(self, stream, enabled):
        self.stream = stream
        self.enabled = enabled
        self.live = enabled and stream.isatty()
        self.total = 0
        self.count = 0

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def warn(self, message):
        self._write(f"{PROG}: warning: {message}\n")

    def _tick(self, prefix, start, stop):
        frame = 0
        while not stop.wait(0.1):
            elapsed = time.perf_counter() - start
            spin = self._SPINNER[frame % len(self._SPINNER)]
            self._write(f"\r{spin} {prefix} {elapsed:.1f} s")
            frame += 1

    @contextlib.contextmanager
    def step(self, label):
        self.count += 1
        if not self.enabled:
            yield
            return
        prefix = f"[{self.count}/{self.total}] {label}"
        start = time.perf_counter()
        stop = threading.Event()
        ticker = None
        if self.live:
            ticker = threading.Thread(
                target=self._tick, args=(prefix, start, stop), daemon=True
            )
            ticker.start()
        else:
            self._write(f"{prefix} ...\n")
        outcome = "failed"
        try:
            yield
            outcome = f"{time.perf_counter() - start:.1f} s"
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            clear = "\r\x1b[K" if self.live else ""
            self._write(f"{clear}{prefix}: {outcome}\n")


def _error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _own_stream(stream):
    """`stream`, on a descriptor of its own if it writes to fd 2, so that it
    stays visible while `native_stderr_to_file` is active."""
    try:
        if stream.fileno() == 2:
            return os.fdopen(
                os.dup(2),
                "w",
                buffering=1,
                encoding=stream.encoding,
                errors="replace",
            )
    except (AttributeError, OSError, ValueError):
        pass
    return stream
