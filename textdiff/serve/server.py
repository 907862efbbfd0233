"""Running the app: ``textdiff serve`` (uvicorn in the foreground, SIGINT / SIGTERM shut it down
gracefully) and :class:`ServerThread` (a server on a free loopback port in a thread, for tests and
benchmarks).

Graceful shutdown: the engine stops admitting (new requests get 503, ``/health`` says
``shutting_down`` so a load balancer moves on), queued and running rows get ``shutdown_timeout``
seconds to finish, then they are cancelled with 503; uvicorn closes the connections and the
worker thread ends.
"""
from __future__ import annotations

import socket
import sys
import threading
from typing import Optional

from ..errors import ConfigError
from .admission import ServeOptions
from .app import create_app

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _server(app, options: ServeOptions, host: str, port: int, log_level: str, report: bool = False):
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            engine = app.state.engine
            engine.begin_shutdown(options.shutdown_timeout)  # before uvicorn waits on the connections
            await super().shutdown(sockets)  # ... and then closes the engine (the app's lifespan)
            if report:
                stats = engine.stats()
                print(f"stopped after {stats.batches} model steps; {stats.waiting + stats.running} rows left", file=sys.stderr)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False,
                            timeout_graceful_shutdown=int(options.shutdown_timeout) + 5)
    return Server(config)


def serve(lm, options: ServeOptions, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``lm`` until interrupted."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (0-65535)")
    if host not in LOOPBACK and options.api_key is None:
        from ..errors import warn

        warn(f"serving on {host} without --api-key: anyone who reaches this address can use the model")
    _server(create_app(lm, options), options, host, port, log_level, report=True).run()
    # (on SIGINT / SIGTERM uvicorn raises the signal again once it has stopped, as process managers expect)


class ServerThread:
    """``with ServerThread(lm, options) as s: httpx.get(s.url + "/health")`` — always shut down on exit."""

    def __init__(self, lm, options: ServeOptions, engine=None, log_level: str = "warning"):
        self.app = create_app(lm, options, engine)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _server(self.app, options, "127.0.0.1", self.port, log_level)
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ServerThread":
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        for _ in range(600):
            if self.server.started or not self._thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not self.server.started:
            self.stop()
            raise RuntimeError("the test server did not start")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown (as on SIGTERM), waiting for the thread."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()

    def __exit__(self, *exc) -> None:
        self.stop()
