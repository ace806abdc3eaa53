"""Server settings: defaults, environment variables (``KEYFACE_*``) and command-line flags.

Precedence: a command-line flag beats its environment variable, which beats the default.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from engine.audio.ingest import SUPPORTED_RATES
from engine.errors import InputError

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, in the browser's ``RTCIceServer`` shape."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    weights: str | None = None
    """Model folder; None: ``$KEYFACE_WEIGHTS`` or the demo avatar."""
    device: str = "auto"
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""

    auth: Literal["auto", "on", "off"] = "auto"
    """Bearer tokens: ``auto`` = on unless bound to a loopback address."""
    api_token: str | None = None
    """Token for creating/listing sessions (generated at start when auth is on and none is set)."""
    cors_origins: tuple[str, ...] = ()

    max_sessions: int = 4
    max_message_bytes: int = 1 << 20
    """Largest websocket message (binary audio or JSON)."""
    max_body_bytes: int = 8 << 20
    """Largest HTTP request body (identity images, SDP, text)."""
    max_messages_per_second: int = 400
    sample_rates: tuple[int, ...] = SUPPORTED_RATES
    max_buffered_seconds: float = 30.0
    """Speech accepted ahead of playback before audio is refused."""
    idle_timeout: float = 60.0
    """Close a session after this long with neither a media peer nor an audio socket."""
    max_session_seconds: float = 0.0
    """Hard limit on a session's life (0: none)."""
    max_text_chars: int = 2000

    ice_interfaces: tuple[str, ...] = ()
    """IP addresses or interface names for ICE host candidates (empty: loopback when bound to
    loopback, else every non-loopback interface)."""
    ice_servers: tuple[IceServer, ...] = ()
    ice_transport_policy: Literal["all", "relay"] = "all"
    video_codec: Literal["auto", "vp8", "h264"] = "auto"

    web_root: Path | None = field(default=WEB_ROOT)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"

    # -- derived ------------------------------------------------------------------------------

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and not self.loopback)

    def validate(self) -> ServerConfig:
        if self.auth not in ("auto", "on", "off"):
            raise InputError(f"auth must be auto, on or off, got {self.auth!r}")
        if self.video_codec not in ("auto", "vp8", "h264"):
            raise InputError(f"video codec must be auto, vp8 or h264, got {self.video_codec!r}")
        if self.ice_transport_policy not in ("all", "relay"):
            raise InputError(f"ICE transport policy must be all or relay, got {self.ice_transport_policy!r}")
        if self.log_format not in ("text", "json"):
            raise InputError(f"log format must be text or json, got {self.log_format!r}")
        bad = [r for r in self.sample_rates if r not in SUPPORTED_RATES]
        if bad or not self.sample_rates:
            raise InputError(f"sample rates must be among {', '.join(map(str, SUPPORTED_RATES))}, got {bad}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be within 0 (any free port) and 65535, got {self.port}")
        for name in ("max_sessions", "max_message_bytes", "max_body_bytes", "max_messages_per_second"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name.replace('_', ' ')} must be positive")
        if self.max_buffered_seconds <= 0 or self.idle_timeout <= 0:
            raise InputError("buffered seconds and idle timeout must be positive")
        if self.ice_transport_policy == "relay" and not any(
            u.startswith(("turn:", "turns:")) for s in self.ice_servers for u in s.urls
        ):
            raise InputError("ICE transport policy 'relay' needs a TURN server (--turn)")
        return self

    def public_ice_servers(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.ice_servers]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- environment and flags ----------------------------------------------------------------------

ENV_PREFIX = "KEYFACE_"
_ENV_NAMES = {
    "host": "HOST",
    "port": "PORT",
    "weights": "WEIGHTS",
    "device": "DEVICE",
    "threads": "THREADS",
    "auth": "AUTH",
    "api_token": "API_TOKEN",
    "cors_origins": "CORS_ORIGINS",
    "max_sessions": "MAX_SESSIONS",
    "max_message_bytes": "MAX_MESSAGE_BYTES",
    "max_body_bytes": "MAX_BODY_BYTES",
    "max_messages_per_second": "MAX_MESSAGES_PER_SECOND",
    "sample_rates": "SAMPLE_RATES",
    "max_buffered_seconds": "MAX_BUFFERED_SECONDS",
    "idle_timeout": "IDLE_TIMEOUT",
    "max_session_seconds": "MAX_SESSION_SECONDS",
    "max_text_chars": "MAX_TEXT_CHARS",
    "ice_interfaces": "ICE_INTERFACES",
    "ice_transport_policy": "ICE_TRANSPORT_POLICY",
    "video_codec": "VIDEO_CODEC",
    "web_root": "WEB_ROOT",
    "log_format": "LOG_FORMAT",
    "log_level": "LOG_LEVEL",
}


def env_names() -> dict[str, str]:
    """Setting name → environment variable."""
    names = {k: ENV_PREFIX + v for k, v in _ENV_NAMES.items()}
    names["ice_servers"] = "KEYFACE_ICE_SERVERS (JSON), KEYFACE_STUN, KEYFACE_TURN, KEYFACE_TURN_USERNAME/PASSWORD"
    return names


def _convert(name: str, raw: Any) -> Any:
    kinds = {f.name: f.type for f in fields(ServerConfig)}
    kind = str(kinds[name])
    try:
        if name in ("cors_origins", "ice_interfaces"):
            items = raw.split(",") if isinstance(raw, str) else raw
            return tuple(s.strip() for s in items if s and s.strip())
        if name == "sample_rates":
            items = raw.split(",") if isinstance(raw, str) else raw
            return tuple(int(s) for s in items if str(s).strip())
        if name == "web_root":
            return None if raw in ("", "none", None) else Path(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except (TypeError, ValueError):
        raise InputError(f"setting {name.replace('_', '-')}: cannot read {raw!r}") from None
    return raw


def ice_servers_from(
    stun: list[str] | str | None = None,
    turn: list[str] | str | None = None,
    username: str | None = None,
    password: str | None = None,
    json_text: str | None = None,
) -> tuple[IceServer, ...]:
    """ICE servers from URLs (comma-separated strings allowed) or a JSON list of RTCIceServer."""
    servers: list[IceServer] = []
    if json_text:
        try:
            items = json.loads(json_text)
            if isinstance(items, dict):
                items = [items]
            for item in items:
                urls = item["urls"]
                urls = [urls] if isinstance(urls, str) else list(urls)
                servers.append(IceServer(tuple(urls), item.get("username"), item.get("credential")))
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"ICE servers JSON: expected a list of {{urls, username, credential}} ({exc})") from None

    def split(value: list[str] | str | None) -> list[str]:
        if value is None:
            return []
        items = value.split(",") if isinstance(value, str) else [u for v in value for u in v.split(",")]
        return [u.strip() for u in items if u.strip()]

    for url in split(stun):
        if not url.startswith(("stun:", "stuns:")):
            url = "stun:" + url
        servers.append(IceServer((url,)))
    turns = split(turn)
    if turns:
        turns = [u if u.startswith(("turn:", "turns:")) else "turn:" + u for u in turns]
        if username is None or password is None:
            raise InputError("a TURN server needs a username and a password (--turn-username/--turn-password)")
        servers.append(IceServer(tuple(turns), username, password))
    return tuple(servers)


def load_config(cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults ← environment ← flags (``cli`` values of None are ignored)."""
    environ = os.environ if environ is None else environ
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    values: dict[str, Any] = {}
    for name, env in _ENV_NAMES.items():
        if env == "WEIGHTS":
            continue  # $KEYFACE_WEIGHTS is resolved by the engine's default_weights()
        raw = environ.get(ENV_PREFIX + env)
        if raw is not None and raw != "":
            values[name] = _convert(name, raw)
    for name in _ENV_NAMES:
        if name in cli:
            values[name] = _convert(name, cli[name])
    servers = ice_servers_from(
        stun=cli.get("stun", environ.get("KEYFACE_STUN")),
        turn=cli.get("turn", environ.get("KEYFACE_TURN")),
        username=cli.get("turn_username", environ.get("KEYFACE_TURN_USERNAME")),
        password=cli.get("turn_password", environ.get("KEYFACE_TURN_PASSWORD")),
        json_text=cli.get("ice_servers", environ.get("KEYFACE_ICE_SERVERS")),
    )
    if servers:
        values["ice_servers"] = servers
    return replace(ServerConfig(), **values).validate()
