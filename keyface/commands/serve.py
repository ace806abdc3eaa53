"""``keyface serve``: the streaming server (WebRTC out, websocket audio in, web client at /)."""

from __future__ import annotations

import argparse

from server.config import env_names

EPILOG = """examples:
  keyface serve                                   # the demo avatar on http://localhost:8080/
  keyface serve --weights ~/keyface --device cuda
  keyface serve --host 0.0.0.0 --token SECRET --turn turn:turn.example.com:3478 \\
                --turn-username avatar --turn-password PASSWORD

Every option can also be set with an environment variable (the flag wins):
""" + "\n".join(f"  {name:<24} {env}" for name, env in env_names().items())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="start the streaming avatar server",
        description="Start the real-time streaming server on the demo avatar (or --weights).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = p.add_argument_group("model")
    model.add_argument("--weights", metavar="DIR", help="model folder (default: $KEYFACE_WEIGHTS, else models/demo)")
    model.add_argument("--device", help="cpu, cuda, cuda:1 … (default: auto)")
    model.add_argument("--threads", type=int, help="torch CPU threads")

    net = p.add_argument_group("network")
    net.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    net.add_argument("--port", type=int, help="port (default: 8080)")
    net.add_argument("--auth", choices=["auto", "on", "off"], help="bearer tokens (default auto: on unless loopback)")
    net.add_argument("--token", dest="api_token", metavar="TOKEN", help="API token (default: generated and printed)")
    net.add_argument("--cors", dest="cors_origins", action="append", metavar="ORIGIN", help="allowed CORS origin")
    net.add_argument("--web-root", metavar="DIR", help="folder served at / (default: the bundled web client)")
    net.add_argument("--no-web", dest="web_root", action="store_const", const="none", help="do not serve a web client")

    rtc = p.add_argument_group("WebRTC")
    rtc.add_argument("--ice-interface", dest="ice_interfaces", action="append", metavar="IP|NAME",
                     help="address or interface for ICE host candidates (repeatable)")  # fmt: skip
    rtc.add_argument("--stun", action="append", metavar="URL", help="STUN server, e.g. stun:stun.example.com:3478")
    rtc.add_argument("--turn", action="append", metavar="URL", help="TURN server, e.g. turn:turn.example.com:3478")
    rtc.add_argument("--turn-username", metavar="NAME")
    rtc.add_argument("--turn-password", metavar="PASSWORD")
    rtc.add_argument("--ice-servers", metavar="JSON", help='list of RTCIceServer, e.g. [{"urls": "turn:…", …}]')
    rtc.add_argument("--relay-only", dest="ice_transport_policy", action="store_const", const="relay",
                     help="only relay (TURN) candidates")  # fmt: skip
    rtc.add_argument("--video-codec", choices=["auto", "vp8", "h264"], help="force a video codec")

    lim = p.add_argument_group("limits")
    lim.add_argument("--max-sessions", type=int, help="concurrent sessions (default 4)")
    lim.add_argument("--max-message-bytes", type=int, help="largest websocket message (default 1 MiB)")
    lim.add_argument("--max-messages-per-second", type=int, help="websocket message rate limit (default 400)")
    lim.add_argument("--max-buffered-seconds", type=float, help="audio accepted ahead of playback (default 30)")
    lim.add_argument(
        "--idle-timeout", type=float, help="close sessions with no peer and no socket after (default 60 s)"
    )
    lim.add_argument("--max-session-seconds", type=float, help="hard session length limit (default none)")
    lim.add_argument("--sample-rates", metavar="LIST", help="accepted input rates, comma-separated")

    logs = p.add_argument_group("logging")
    logs.add_argument("--log-format", choices=["text", "json"])
    logs.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.config import load_config
    from server.main import serve

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    serve(load_config(options))
    return 0
