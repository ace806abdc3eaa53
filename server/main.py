"""Starting the server: load the model, set up ICE and logging, run uvicorn."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from pathlib import Path

import torch
import uvicorn

from engine.bundle import load_bundle
from engine.defaults import default_weights, resolve_device
from engine.live.runner import AvatarEngine
from engine.live.session import LiveConfig

from . import signaling
from .app import create_app
from .config import ServerConfig
from .logs import redact_tokens, setup_logging

log = logging.getLogger(__name__)

WS_IMPLEMENTATION = "websockets-sansio"
"""uvicorn's websocket protocol on the ``websockets`` package (its sans-I/O core; the legacy
``websockets`` implementation is deprecated in uvicorn)."""


def weights_path(config: ServerConfig) -> Path:
    """``--weights``, else ``$KEYFACE_WEIGHTS``, else models/demo (a clear error when none exists)."""
    return Path(config.weights) if config.weights else default_weights()


def load_engine(config: ServerConfig) -> AvatarEngine:
    if config.threads:
        torch.set_num_threads(config.threads)
    bundle = load_bundle(weights_path(config), device=resolve_device(config.device))
    live = LiveConfig(max_buffered_seconds=config.max_buffered_seconds)
    return AvatarEngine(bundle, config=live, max_sessions=config.max_sessions)


def uvicorn_config(app, config: ServerConfig, **overrides) -> uvicorn.Config:
    """uvicorn settings: websockets on the ``websockets`` package, frames bounded by size."""
    options = {
        "host": config.host,
        "port": config.port,
        "ws": WS_IMPLEMENTATION,
        "ws_max_size": 4 * config.max_message_bytes,  # beyond this the transport closes with 1009
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def prepare(config: ServerConfig, engine: AvatarEngine):
    """The app for ``engine`` (which takes the server's audio-buffer limit), with ICE host
    candidates restricted to the configured addresses."""
    if engine.config.max_buffered_seconds != config.max_buffered_seconds:
        engine.config = dataclasses.replace(engine.config, max_buffered_seconds=config.max_buffered_seconds)
    signaling.use_host_addresses(signaling.host_addresses(config))
    redact_tokens()
    return create_app(config, engine)


def serve(config: ServerConfig, engine: AvatarEngine | None = None) -> None:
    """Run until interrupted (blocking)."""
    engine = engine or load_engine(config)  # a missing model fails here, before logging is set up
    setup_logging(config.log_format, config.log_level)
    app = prepare(config, engine)
    state = app.state.keyface
    url = f"http://{'localhost' if config.loopback else config.host}:{config.port}/"
    log.info("model %s (%d px) on %s", engine.bundle.name, engine.image_size, engine.engine.device)
    if state.auth.enabled:
        shown = "(from your configuration)" if config.api_token else state.auth.api_token
        log.info("auth is on: API token %s", shown)
        url += "#token=<API token>" if config.api_token else f"#token={state.auth.api_token}"
    else:
        log.info("auth is off (loopback only; use --auth on to require tokens)")
    addresses = signaling.host_addresses(config)
    log.info("ICE host candidates on %s", ", ".join(addresses) if addresses else "all non-loopback interfaces")
    log.info("open %s", url)
    uvicorn.Server(uvicorn_config(app, config)).run()


class ServerThread:
    """The server in a background thread of this process (tests, notebooks, embedding).

    ``with ServerThread(config, engine) as server: ...`` starts it on ``config.port`` (0: a free
    port, see :attr:`url`) and stops it (closing every session) on exit.
    """

    def __init__(self, config: ServerConfig, engine: AvatarEngine) -> None:
        self.config = config
        self.app = prepare(config, engine)
        self.server = uvicorn.Server(uvicorn_config(self.app, config))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.server.run, name="keyface-server", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self):
        return self.app.state.keyface

    @property
    def port(self) -> int:
        sockets = [s for server in self.server.servers for s in server.sockets]
        return sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        waited = 0.0
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server failed to start (see the log)")
            threading.Event().wait(0.02)
            waited += 0.02
            if waited > timeout:
                raise TimeoutError("the server did not start in time")
        self.loop = self.state.manager.loop
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
