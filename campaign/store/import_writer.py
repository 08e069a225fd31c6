"""An import's write in a child process: this process checks the sheet while the child,
with its own connection, writes the rows already checked, so the two use two cores.

One child per import: a fresh interpreter (`sys.executable`), never a fork (the web desk
imports from a threaded server, and a forked copy of its threads' locks could hang) nor
multiprocessing's spawn or forkserver (they import the caller's `__main__` again, which
a script without a main guard cannot survive); the two talk over a socket pair, and the
ledger's URL (it may hold a password) travels over it, not on the command line.

The child runs the whole write (`imports.write_import`) in ONE transaction and commits
only after the last message, which comes only when the whole sheet is checked: a sheet
refused halfway, a parent that dies or gives up, or a child that dies, leaves nothing
written. Every wait on the child is bounded by its life: a child that dies is an error
within a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from campaign.store.db import LedgerError

if TYPE_CHECKING:
    from campaign.store.imports import ImportCounts, StoredRow

logger = logging.getLogger(__name__)

#: messages (runs of rows) queued for the child before the checking waits for it
_AHEAD = 8
#: how often a wait on the child looks whether it is still alive (seconds)
_LOOK = 0.5
#: how long a child that is told to stop may take to roll back before it is killed
_STOP_SECONDS = 10.0


class ImportWriter:
    """The parent's side: `send` runs of rows, then `finish` with the sheet's rejections
    (the child commits and answers its counts). Leaving the `with` block without
    `finish` (an error) stops the child, which rolls back."""

    def __init__(self, url: str, campaign: str, region: str, source: str) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])  # where `campaign` is imported from
        path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError as exc:
            ours.close()
            raise LedgerError(f"cannot start the import's writer process: {exc}") from None
        finally:
            theirs.close()  # the child holds it now: its death closes the pair
        self._connection = Connection(ours.detach())
        #: what the sender thread hands on (None: no more)
        self._outbox: queue.Queue[bytes | None] = queue.Queue(_AHEAD)
        self._outbox.put(pickle.dumps((url, campaign, region, source), pickle.HIGHEST_PROTOCOL))
        self._broken: OSError | None = None
        #: the child has been sent the last message (it may have committed)
        self._ended = False
        self._sender = threading.Thread(
            target=self._send_all, name="import-writer-send", daemon=True
        )
        self._sender.start()

    def __enter__(self) -> ImportWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop()

    def send(self, rows: list[StoredRow]) -> None:
        """Hand the child a run of rows (it writes them while this process goes on)."""
        self._put(pickle.dumps(("rows", rows), pickle.HIGHEST_PROTOCOL))

    def finish(self, rejections: list[dict[str, Any]]) -> ImportCounts:
        """Send the last message; the child writes the rejections, commits and answers."""
        self._put(pickle.dumps(("end", rejections), pickle.HIGHEST_PROTOCOL))
        self._put(None)
        while self._sender.is_alive():
            self._sender.join(_LOOK)
        if self._broken is not None:
            raise self._stopped()
        self._ended = True
        while not self._connection.poll(_LOOK):
            if self._process.poll() is not None and not self._connection.poll(0):
                raise self._stopped()
        try:
            status, payload = pickle.loads(self._connection.recv_bytes())  # our own child's
        except (EOFError, OSError):
            raise self._stopped() from None
        if status == "error":
            raise payload
        counts: ImportCounts = payload
        return counts

    def _put(self, message: bytes | None) -> None:
        while True:
            if self._broken is not None or not self._sender.is_alive():
                raise self._stopped()
            try:
                self._outbox.put(message, timeout=_LOOK)
                return
            except queue.Full:
                continue

    def _send_all(self) -> None:
        """The sender thread: writing to the pipe waits while the child is busy, and the
        checking goes on meanwhile (the write releases the GIL)."""
        while (message := self._outbox.get()) is not None:
            try:
                self._connection.send_bytes(message)
            except OSError as exc:  # the child is gone
                self._broken = exc
                return

    def _stopped(self) -> Exception:
        """The error for a child that stopped early: its own error when it sent one."""
        answer = self._child_error()
        if answer is not None:
            return answer
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(_STOP_SECONDS)
        code = self._process.returncode
        if code is None:
            how = "stopped answering"
        elif code < 0:
            how = f"was killed ({signal.Signals(-code).name})"
        else:
            how = f"exited (status {code})"
        if self._ended:
            outcome = "the import may or may not be stored: run it again (imports are idempotent)"
        else:
            outcome = "nothing was imported"
        return LedgerError(f"the import's writer process {how} before it finished; {outcome}")

    def _child_error(self) -> Exception | None:
        try:
            if not self._connection.poll(0):
                return None
            status, payload = pickle.loads(self._connection.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError):
            return None
        return payload if status == "error" and isinstance(payload, Exception) else None

    def _stop(self) -> None:
        """End the pipe (a child still writing reads its end and rolls back; a sender
        blocked on it fails) and wait for the sender and the child, killing a child
        that does not stop."""
        with contextlib.suppress(OSError):  # a socket pair: shutting it down wakes both
            socket.socket(fileno=os.dup(self._connection.fileno())).shutdown(socket.SHUT_RDWR)
        while True:  # unblock a sender waiting for work
            try:
                self._outbox.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._outbox.put_nowait(None)
        self._sender.join(_STOP_SECONDS)
        self._connection.close()
        try:
            self._process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("the import's writer process did not stop; killing it")
            self._process.kill()
            self._process.wait(_STOP_SECONDS)


_CHILD = "from campaign.store.import_writer import _child; _child()"


def _child() -> None:
    """The child's side (`python -c`, the socket's descriptor as its argument): write
    the rows as they come, then the rejections; commit only after the last message.
    Any error is sent back (pickled) before the child exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; a Ctrl-C reaches both
    from campaign.store.db import Ledger
    from campaign.store.imports import write_import

    connection = Connection(int(sys.argv[1]))
    ending: list[list[dict[str, Any]]] = []

    def rows() -> Any:
        while True:
            kind, payload = pickle.loads(connection.recv_bytes())  # our parent's
            if kind == "end":
                ending.append(payload)
                return
            yield from payload

    answer: tuple[str, Any]
    ledger: Ledger | None = None
    try:
        url, campaign, region, source = pickle.loads(connection.recv_bytes())
        ledger = Ledger(url)
        with ledger.session() as session:
            counts = write_import(session, campaign, region, source, rows(), lambda: ending[0])
            if not ending:  # pragma: no cover - write_import reads every row
                raise LedgerError("the import ended before its last message")
        answer = ("done", counts)
    except EOFError:  # the parent stopped: the transaction is rolled back
        return
    except Exception as exc:
        answer = ("error", _portable(exc))
    finally:
        if ledger is not None:
            ledger.dispose()
    with contextlib.suppress(OSError):  # the parent is gone
        connection.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))


def _portable(exc: Exception) -> Exception:
    """The exception itself when it survives pickling, else a LedgerError with its text."""
    try:
        copy = pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return LedgerError(f"the import failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    return copy if isinstance(copy, Exception) else LedgerError(str(exc))
