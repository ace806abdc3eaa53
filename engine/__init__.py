"""KeyFace Live engine: networks, sampling, audio features and the real-time scheduler.

The engine knows nothing about HTTP, WebRTC or websockets; the server talks to it through the
session interface in :mod:`engine.session`.
"""
