"""Per-frame face parameters and the head pose transform.

Geometry lives in *head coordinates*: at rest the image spans [-1, 1] on both axes (y points
down). Head motion is a shift plus a tilt about :data:`PIVOT` (the top of the neck).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

PARAM_NAMES = (
    "jaw_open", "lip_width", "lip_round", "lip_closure", "smile", "brow_raise",
    "eye_open", "blink", "cheek_raise", "head_dx", "head_dy", "head_tilt",
)
"""Per-frame face parameters, in this order in every (T, P) array."""
P = len(PARAM_NAMES)
PARAM_INDEX = {name: i for i, name in enumerate(PARAM_NAMES)}
PARAM_RANGES = {
    "jaw_open": (0.0, 1.0), "lip_width": (-1.0, 1.0), "lip_round": (0.0, 1.0), "lip_closure": (0.0, 1.0),
    "smile": (-1.0, 1.0), "brow_raise": (-1.0, 1.0), "eye_open": (-1.0, 1.0), "blink": (0.0, 1.0),
    "cheek_raise": (0.0, 1.0), "head_dx": (-1.0, 1.0), "head_dy": (-1.0, 1.0), "head_tilt": (-1.0, 1.0),
}

MAX_SHIFT = 0.05
"""Head shift at head_dx/head_dy = ±1, in head units (the image is 2 units wide)."""
MAX_TILT = 0.06
"""Head tilt at head_tilt = ±1, in radians (about 3.4°, clockwise on screen)."""
PIVOT = (0.0, 0.45)
"""Tilt pivot in head coordinates."""
SMILE_RANGE = 0.05
"""Mouth-corner lift at smile = ±1, in head units."""
BROW_RANGE = 0.04
"""Brow lift at brow_raise = ±1 at the outer end; the inner end moves (1 + BROW_INNER) times that."""
BROW_INNER = 0.3
CHEEK_RANGE = 0.035
"""Cheek lift at cheek_raise = 1."""


@dataclass(frozen=True)
class FaceParams:
    """Face parameters of one frame (ranges in :data:`PARAM_RANGES`; all zero is neutral).

    jaw_open: lip gap (0 closed .. 1 the identity's widest); lip_width: spread (+) / narrow (-);
    lip_round: rounding (narrower, thicker, rounder opening); lip_closure: pressed lips, forces
    the gap shut; smile: mouth-corner lift (+) / drop (-); brow_raise: brows up (+) / frown (-);
    eye_open: wide (+) / squint (-); blink: 1 = lids shut; cheek_raise: raised blushing cheeks;
    head_dx/head_dy: shift in units of :data:`MAX_SHIFT`; head_tilt: in units of :data:`MAX_TILT`.
    """

    jaw_open: float = 0.0
    lip_width: float = 0.0
    lip_round: float = 0.0
    lip_closure: float = 0.0
    smile: float = 0.0
    brow_raise: float = 0.0
    eye_open: float = 0.0
    blink: float = 0.0
    cheek_raise: float = 0.0
    head_dx: float = 0.0
    head_dy: float = 0.0
    head_tilt: float = 0.0

    def array(self) -> np.ndarray:
        return np.array(dataclasses.astuple(self), np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> FaceParams:
        return cls(*(float(v) for v in np.asarray(values).reshape(P)))


def clip_params(params: np.ndarray) -> np.ndarray:
    """Clip a (..., P) parameter array to :data:`PARAM_RANGES`."""
    lo = np.array([PARAM_RANGES[n][0] for n in PARAM_NAMES], np.float32)
    hi = np.array([PARAM_RANGES[n][1] for n in PARAM_NAMES], np.float32)
    return np.clip(params, lo, hi).astype(np.float32)


Pose = tuple[float, float, float]
"""(dx, dy, tilt) in head units and radians."""


def pose_of(params: np.ndarray) -> Pose:
    """The head pose of a (P,) parameter vector."""
    p = np.asarray(params)
    return (float(p[PARAM_INDEX["head_dx"]]) * MAX_SHIFT, float(p[PARAM_INDEX["head_dy"]]) * MAX_SHIFT,
            float(p[PARAM_INDEX["head_tilt"]]) * MAX_TILT)


def head_to_image(x: np.ndarray, y: np.ndarray, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Map head coordinates to image coordinates (both in [-1, 1] units)."""
    dx, dy, th = pose
    c, s = np.cos(th), np.sin(th)
    a, b = x - PIVOT[0], y - PIVOT[1]
    return c * a - s * b + PIVOT[0] + dx, s * a + c * b + PIVOT[1] + dy


def image_to_head(u: np.ndarray, v: np.ndarray, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`head_to_image`."""
    dx, dy, th = pose
    c, s = np.cos(th), np.sin(th)
    a, b = u - dx - PIVOT[0], v - dy - PIVOT[1]
    return c * a + s * b + PIVOT[0], -s * a + c * b + PIVOT[1]


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of the pixel centres: (u, v), each (size, size) float32."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))
