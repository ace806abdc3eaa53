"""The HTTP API (FastAPI on uvicorn): sessions, WebRTC signalling, the audio websocket, the web client.

Every error is a JSON body ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status; no
traceback ever reaches a client. The OpenAPI description is served at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, Request, Security, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageDraw, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.audio.base import SAMPLE_RATE
from engine.emotion import Emotion, parse_emotion
from engine.errors import InputError, KeyFaceError
from engine.live.runner import AvatarEngine

from . import __version__, signaling, tts
from .auth import Auth, AuthError, new_token
from .config import ServerConfig
from .ingest import serve_audio_socket
from .metrics import Metrics
from .session import ServerSession, SessionLimit, SessionManager

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class ServerState:
    config: ServerConfig
    engine: AvatarEngine
    manager: SessionManager
    auth: Auth
    metrics: Metrics
    started: float


# -- request and response bodies ----------------------------------------------------------------


class EmotionBody(BaseModel):
    valence: float | None = Field(None, ge=-1, le=1)
    arousal: float | None = Field(None, ge=-1, le=1)
    preset: str | None = Field(None, description="a preset name instead of valence/arousal, e.g. 'happy'")


class CreateSession(BaseModel):
    image: str | None = Field(
        None, description="identity image (PNG/JPEG) as base64 or a data: URL; default: the model's own face"
    )
    emotion: str | EmotionBody | None = Field(None, description="preset name, 'valence,arousal', or an object")
    seed: int | None = Field(None, description="noise seed of the session (reproducible idle motion)")


class SessionCreated(BaseModel):
    session_id: str
    token: str = Field(description="bearer token for this session's endpoints and websocket")
    offer_url: str
    audio_url: str = Field(description="websocket path for audio in / events out (add ?token=…)")
    ice_servers: list[dict[str, Any]]
    image_size: int
    sample_rate: int = SAMPLE_RATE


class SessionDescription(BaseModel):
    sdp: str
    type: str = Field(description="'offer' in a request, 'answer' in the response")


class SayBody(BaseModel):
    text: str
    voice: str = "en"
    speed: int = Field(165, description="words per minute")


# -- helpers ------------------------------------------------------------------------------------


def decode_image(data: str) -> torch.Tensor:
    """Base64 / data-URL image → float (3, H, W) in [0, 1]."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image: not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InputError(f"image: {img.width}×{img.height} is too large (at most 4096×4096)")
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"image: not a readable PNG/JPEG ({exc})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def placeholder_identity(size: int) -> torch.Tensor:
    """A plain drawn face (3, size, size) for models that ship no identity image."""
    img = Image.new("RGB", (256, 256), (70, 110, 150))
    draw = ImageDraw.Draw(img)
    draw.ellipse([64, 40, 192, 210], fill=(224, 180, 150))
    for x in (100, 156):
        draw.ellipse([x - 10, 105, x + 10, 120], fill=(40, 30, 30))
    draw.ellipse([108, 160, 148, 176], fill=(150, 60, 60))
    rgb = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def emotion_of(spec: str | EmotionBody | None) -> Emotion:
    if spec is None:
        return Emotion()
    if isinstance(spec, str):
        return parse_emotion(spec)
    if spec.preset is not None:
        return Emotion.preset(spec.preset)
    if spec.valence is None or spec.arousal is None:
        raise InputError("emotion: give both valence and arousal, or a preset")
    return Emotion(spec.valence, spec.arousal)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


bearer = HTTPBearer(auto_error=False, description="the API token, or a session's token for its endpoints")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def state_of(request: Request) -> ServerState:
    return request.app.state.keyface


def _token(request: Request, creds: HTTPAuthorizationCredentials | None) -> str | None:
    return creds.credentials if creds is not None else request.query_params.get("token")


async def require_api(request: Request, creds: Credentials) -> None:
    state_of(request).auth.check_api(_token(request, creds))


async def require_session(session_id: str, request: Request, creds: Credentials) -> ServerSession:
    state = state_of(request)
    token = _token(request, creds)
    if state.auth.enabled and token is None:
        raise AuthError("missing bearer token (the session token or the API token)")
    session = state.manager.get(session_id)
    if session is None:
        raise ApiError(404, "unknown_session", f"no session {session_id!r}")
    state.auth.check_session(token, session.token)
    return session


SessionDep = Annotated[ServerSession, Depends(require_session)]


class BodyLimit:
    """Refuse request bodies larger than the limit (by Content-Length) with 413."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                response = _error(413, "too_large", f"request body larger than {self.limit} bytes")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the app --------------------------------------------------------------------------------------


def create_app(config: ServerConfig, engine: AvatarEngine) -> FastAPI:
    """The ASGI app serving ``engine``. With auth on and no API token configured, one is generated
    (``app.state.keyface.auth.api_token``)."""
    metrics = Metrics()
    auth = Auth(config.auth_enabled, config.api_token or (new_token() if config.auth_enabled else None))
    manager = SessionManager(engine, config, metrics)
    state = ServerState(config, engine, manager, auth, metrics, time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start_reaper()
        try:
            yield
        finally:
            await manager.stop_reaper()
            await manager.close_all("shutdown")

    app = FastAPI(
        title="KeyFace Live",
        version=__version__,
        description="Real-time talking avatars: TTS audio in over a websocket, WebRTC video+audio out.",
        lifespan=lifespan,
    )
    app.state.keyface = state
    _handlers(app)
    _routes(app, state)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    _web(app, config)
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc))

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        return _error(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(SessionLimit)
    async def limit_error(request: Request, exc: SessionLimit) -> JSONResponse:
        return _error(503, "too_many_sessions", str(exc), {"Retry-After": "5"})

    @app.exception_handler(tts.TTSUnavailable)
    async def tts_error(request: Request, exc: tts.TTSUnavailable) -> JSONResponse:
        return _error(503, "tts_unavailable", str(exc))

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return _error(400, getattr(exc, "code", "bad_request"), str(exc))

    @app.exception_handler(KeyFaceError)
    async def keyface_error(request: Request, exc: KeyFaceError) -> JSONResponse:
        return _error(500, "engine_error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return _error(400, "bad_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal server error (see the server log)")


def _routes(app: FastAPI, state: ServerState) -> None:
    config, manager, engine = state.config, state.manager, state.engine

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "model": engine.bundle.name,
            "image_size": engine.image_size,
            "sessions": len(manager.sessions),
            "max_sessions": config.max_sessions,
            "uptime_seconds": round(time.time() - state.started, 1),
        }

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/config", tags=["sessions"])
    async def client_config() -> dict[str, Any]:
        """What a client needs before creating a session (no auth)."""
        return {
            "auth": state.auth.enabled,
            "ice_servers": config.public_ice_servers(),
            "ice_transport_policy": config.ice_transport_policy,
            "sample_rates": list(config.sample_rates),
            "max_message_bytes": config.max_message_bytes,
            "max_buffered_seconds": config.max_buffered_seconds,
            "image_size": engine.image_size,
            "tts": tts.espeak_binary() is not None,
            "has_default_identity": engine.bundle.identity_image is not None,
        }

    @app.post("/v1/sessions", status_code=201, tags=["sessions"], dependencies=[Depends(require_api)])
    async def create_session(body: CreateSession | None = None) -> SessionCreated:
        """Open an avatar session; its frames start at once (idle until audio arrives)."""
        body = body or CreateSession()
        identity = decode_image(body.image) if body.image else None
        if identity is None and engine.bundle.identity_image is None:
            identity = placeholder_identity(engine.image_size)  # a model without a face of its own
        session = await manager.create(identity, emotion_of(body.emotion), body.seed)
        base = f"/v1/sessions/{session.id}"
        return SessionCreated(
            session_id=session.id,
            token=session.token,
            offer_url=base + "/offer",
            audio_url=base + "/audio",
            ice_servers=config.public_ice_servers(),
            image_size=engine.image_size,
        )

    @app.get("/v1/sessions", tags=["sessions"], dependencies=[Depends(require_api)])
    async def list_sessions() -> dict[str, Any]:
        return {"sessions": [s.describe() for s in manager.sessions.values()], "max_sessions": config.max_sessions}

    @app.get("/v1/sessions/{session_id}", tags=["sessions"])
    async def get_session(session: SessionDep) -> dict[str, Any]:
        return session.describe()

    @app.post("/v1/sessions/{session_id}/offer", tags=["signalling"])
    async def offer(session: SessionDep, body: SessionDescription) -> SessionDescription:
        """WebRTC: an SDP offer (receive video + audio) in, the SDP answer with all candidates out."""
        feed = session.new_feed()
        pc, sdp = await signaling.answer(config, body.sdp, body.type, feed)
        if session.closed:
            feed.stop()
            await pc.close()
            raise ApiError(410, "session_closed", "the session closed while answering")
        await session.attach_peer(pc, feed)
        return SessionDescription(sdp=sdp, type="answer")

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["sessions"])
    async def delete_session(session: SessionDep) -> Response:
        await manager.close(session.id, "deleted")
        return Response(status_code=204)

    @app.post(
        "/v1/sessions/{session_id}/tts",
        tags=["sessions"],
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}, "description": "16 kHz mono 16-bit WAV"}},
    )
    async def speak(session: SessionDep, body: SayBody) -> Response:
        """Synthesise ``text`` with espeak-ng; stream the returned WAV over the audio websocket."""
        if len(body.text) > config.max_text_chars:
            raise InputError(f"text longer than {config.max_text_chars} characters")
        samples = await asyncio.to_thread(tts.synthesize, body.text, body.voice, body.speed)
        return Response(tts.wav_bytes(samples), media_type="audio/wav")

    @app.websocket("/v1/sessions/{session_id}/audio")
    async def audio_socket(websocket: WebSocket, session_id: str) -> None:
        await serve_audio_socket(websocket, session_id, manager, state.auth, state.metrics)


def _web(app: FastAPI, config: ServerConfig) -> None:
    root = config.web_root
    if root is not None and (root / "index.html").is_file():
        app.mount("/", StaticFiles(directory=root, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def no_web() -> HTMLResponse:
        return HTMLResponse("<h1>KeyFace Live</h1><p>The web client is not installed; the API is at /docs.</p>")
