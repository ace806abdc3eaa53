"""WebRTC signalling: an SDP offer in, an SDP answer (all ICE candidates included) out.

Non-trickle: the answer carries every local candidate, so a client needs exactly one request.
Host candidates come from the configured interfaces (:func:`use_host_addresses`); STUN and TURN
servers from the configuration. When the server's only host candidates are loopback and no
STUN/TURN server is configured, remote candidates that cannot be on loopback (LAN addresses,
mDNS names) are dropped from the offer: they could never connect and would only cost checks.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence

import aioice.ice
import ifaddr
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from engine.errors import InputError

from .config import ServerConfig
from .media import MediaFeed

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024
_aioice_host_addresses = aioice.ice.get_host_addresses
_CODECS = {"vp8": "video/VP8", "h264": "video/H264"}


class SignalingError(InputError):
    """A bad offer (HTTP 400)."""


def resolve_interfaces(names: Sequence[str]) -> list[str]:
    """IP addresses for a list of IP addresses and/or interface names (``eth0``)."""
    adapters = {a.nice_name: a for a in ifaddr.get_adapters()}
    out: list[str] = []
    for name in names:
        try:
            out.append(str(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        adapter = adapters.get(name)
        if adapter is None:
            raise InputError(f"ICE interface {name!r} is neither an IP address nor a network interface here")
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append(ip.ip)
            elif ip.ip[2] == 0:  # IPv6 without scope (not link-local)
                out.append(ip.ip[0])
    return out


def host_addresses(config: ServerConfig) -> list[str] | None:
    """The ICE host addresses for ``config`` (None: every non-loopback interface)."""
    if config.ice_interfaces:
        return resolve_interfaces(config.ice_interfaces)
    if config.loopback:
        return ["::1"] if config.host == "::1" else ["127.0.0.1"]
    return None


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Make ICE gather host candidates on exactly ``addresses`` (None: aioice's default).

    Process-wide: every aiortc peer connection in this process gathers on these addresses.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _aioice_host_addresses
        return
    chosen = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def rtc_configuration(config: ServerConfig) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in config.ice_servers
    ]
    policy = RTCIceTransportPolicy.RELAY if config.ice_transport_policy == "relay" else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers or None, iceTransportPolicy=policy)


def _is_loopback_candidate(line: str) -> bool:
    parts = line.split()
    if len(parts) < 5:
        return False
    try:
        return ipaddress.ip_address(parts[4]).is_loopback
    except ValueError:
        return False


def filter_candidates(sdp: str) -> str:
    """Drop non-loopback ``a=candidate`` lines (loopback-only servers)."""
    lines = sdp.splitlines()
    kept = [ln for ln in lines if not ln.startswith("a=candidate:") or _is_loopback_candidate(ln)]
    return "\r\n".join(kept) + "\r\n"


def _sections(sdp: str) -> list[tuple[str, str]]:
    """(kind, client direction) of every m= section."""
    out = []
    for block in re.split(r"\r?\nm=", "\n" + sdp)[1:]:
        kind = block.split(" ", 1)[0]
        direction = next((d for d in ("sendrecv", "recvonly", "sendonly", "inactive") if f"a={d}" in block), "sendrecv")
        out.append((kind, direction))
    return out


def check_offer(sdp: object, kind: object) -> str:
    if kind != "offer":
        raise SignalingError(f"expected an SDP of type 'offer', got {kind!r}")
    if not isinstance(sdp, str) or not sdp.strip():
        raise SignalingError("the offer has no SDP text")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise SignalingError(f"the SDP offer is larger than {MAX_SDP_BYTES} bytes")
    if not sdp.lstrip().startswith("v=0"):
        raise SignalingError("malformed SDP offer: it must start with 'v=0'")
    media = [(k, d) for k, d in _sections(sdp) if k in ("audio", "video")]
    kinds = sorted(k for k, _ in media)
    if kinds != ["audio", "video"]:
        raise SignalingError(f"the offer must have exactly one video and one audio section, got {kinds}")
    for k, direction in media:
        if direction not in ("recvonly", "sendrecv"):
            raise SignalingError(f"the offer's {k} section is {direction}: it must receive (recvonly)")
    return sdp


def _prefer_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    mime = _CODECS[codec]
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in capabilities if c.mimeType in (mime, "video/rtx")])


def _loopback_only(config: ServerConfig) -> bool:
    addresses = host_addresses(config)
    return (
        addresses is not None and not config.ice_servers and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    )


async def answer(config: ServerConfig, sdp: object, kind: object, feed: MediaFeed) -> tuple[RTCPeerConnection, str]:
    """A new peer connection sending ``feed``'s tracks, and its SDP answer."""
    offer = check_offer(sdp, kind)
    if _loopback_only(config):
        offer = filter_candidates(offer)
    pc = RTCPeerConnection(rtc_configuration(config))
    try:
        video = pc.addTransceiver(feed.video, direction="sendonly")
        pc.addTransceiver(feed.audio, direction="sendonly")
        if config.video_codec != "auto":
            _prefer_codec(video, config.video_codec)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises assorted errors on bad SDP
            raise SignalingError(f"malformed or unsupported SDP offer: {exc or type(exc).__name__}") from None
        return pc, pc.localDescription.sdp
    except BaseException:
        await pc.close()
        raise
