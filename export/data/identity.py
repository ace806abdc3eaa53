"""Random face identities and the feature geometry shared by the renderer and the measurements.

An :class:`Identity` holds sizes (head units, see :mod:`export.data.params`) and colours (RGB in
0..1). Sampling rejects layouts in which a measured feature (mouth, brows, eyes, nose) could touch
another one, the hair, the cheeks or the shaded rim of the face, so colour segmentation inside a
feature's box (export/data/measure.py) only ever sees that feature on plain skin.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from .params import BROW_INNER, BROW_RANGE, CHEEK_RANGE, SMILE_RANGE

RGB = tuple[float, float, float]
Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in head coordinates."""

HAIR_STYLES = ("short", "long", "bob", "buzz", "curly", "bald")
SEPARATION = 0.05
"""Minimum gap between measured features, head units (1.6 pixels at 64×64)."""
RIM = 0.05
"""Width of the darker rim shading inside the face outline."""
COLOR_KEYS = ("skin", "lip", "mouth", "nose", "blush_color", "hair", "brow", "iris", "sclera", "shirt",
              "bg_top", "bg_bottom")


@dataclass(frozen=True)
class Identity:
    """Everything that makes one face look like itself."""

    seed: int
    # face shape
    face_cy: float
    face_rx: float
    face_ry: float
    face_power: float
    """Superellipse exponent of the outline: 2 = ellipse, larger = squarer."""
    chin_taper: float
    ear_y: float
    ear_rx: float
    ear_ry: float
    neck_rx: float
    # features
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    iris_r: float
    lash: float
    brow_gap: float
    brow_len: float
    brow_thick: float
    brow_arch: float
    brow_slant: float
    nose_y: float
    nose_w: float
    nose_h: float
    mouth_y: float
    mouth_w: float
    upper_lip: float
    lower_lip: float
    max_gap: float
    cheek_x: float
    cheek_y: float
    cheek_r: float
    blush: float
    # hair and body
    hair_style: str
    hairline: float
    """y of the front hairline at the centre."""
    hair_volume: float
    hair_part: float
    body_rx: float
    # colours
    skin: RGB
    lip: RGB
    mouth: RGB
    """Mouth interior."""
    nose: RGB
    blush_color: RGB
    hair: RGB
    brow: RGB
    iris: RGB
    sclera: RGB
    shirt: RGB
    bg_top: RGB
    bg_bottom: RGB

    @classmethod
    def sample(cls, seed: int) -> Identity:
        """A random identity; the same seed always gives the same face."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D]))
        for _ in range(500):
            ident = _sample_identity(rng, int(seed))
            if not layout_problems(ident):
                return ident
        raise RuntimeError(f"could not sample a valid identity for seed {seed}")  # pragma: no cover

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Identity:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})

    # ---- feature boxes: everything a feature can cover at any parameter value, head coords ----

    def mouth_box(self) -> Box:
        return _mouth_box(self)

    def nose_box(self) -> Box:
        return (-self.nose_w, self.nose_y - self.nose_h, self.nose_w, self.nose_y + self.nose_h)

    def brow_box(self, side: int) -> Box:
        """The brow on ``side`` (-1: image left, +1: image right)."""
        return _brow_box(self, side)

    def eye_box(self, side: int) -> Box:
        cx = side * self.eye_dx
        return (cx - 1.05 * self.eye_w, self.eye_y - 1.15 * self.eye_h - self.lash,
                cx + 1.05 * self.eye_w, self.eye_y + 0.55 * self.eye_h)

    def cheek_box(self, side: int) -> Box:
        r = self.cheek_r
        return (side * self.cheek_x - r, self.cheek_y - CHEEK_RANGE - r, side * self.cheek_x + r, self.cheek_y + r)


# ---- feature geometry ----

def mouth_curves(ident: Identity, x: np.ndarray, jaw: float, width: float, rnd: float, closure: float,
                 smile: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mouth half-width and the y of the upper-outer, upper-inner, lower-inner, lower-outer lip lines.

    The lip gap is ``max_gap * jaw * (1 - closure)``, opened mostly downwards at the centre and
    symmetrically near the corners, whose height depends on ``smile`` only.
    """
    w = ident.mouth_w * max(0.5, 1 + 0.22 * width + 0.1 * smile - 0.3 * rnd)
    s = np.clip(x / w, -1.0, 1.0)
    s2 = s * s
    q = 1 - s2
    mid = ident.mouth_y - smile * SMILE_RANGE * s2
    gap = ident.max_gap * float(np.clip(jaw, 0, 1)) * (1 - float(np.clip(closure, 0, 1)))
    prof = gap * q ** (0.8 - 0.3 * rnd)
    asym = 0.2 * q * q
    up_in = mid - prof * (0.5 - asym)
    lo_in = mid + prof * (0.5 + asym)
    taper = (1 + 0.3 * rnd) * (1 - 0.25 * closure) * (1 - 0.75 * s2)
    return w, up_in - ident.upper_lip * taper, up_in, lo_in, lo_in + ident.lower_lip * taper


@functools.lru_cache(maxsize=1024)
def _mouth_box(ident: Identity) -> Box:
    x = np.linspace(-1.4, 1.4, 57) * ident.mouth_w
    top, bottom, half = np.inf, -np.inf, 0.0
    for jaw in (0.0, 1.0):
        for width in (-1.0, 1.0):
            for rnd in (0.0, 1.0):
                for smile in (-1.0, 1.0):
                    w, uo, _, _, lo = mouth_curves(ident, x, jaw, width, rnd, 0.0, smile)
                    inside = np.abs(x) <= w
                    top, bottom = min(top, float(uo[inside].min())), max(bottom, float(lo[inside].max()))
                    half = max(half, w)
    return (-half, top, half, bottom)


@functools.lru_cache(maxsize=1024)
def _brow_box(ident: Identity, side: int) -> Box:
    t = np.linspace(0, 1, 41)
    hi = brow_centre(ident, t, 1.0) - brow_half_thickness(ident, t)
    lo = brow_centre(ident, t, -1.0) + brow_half_thickness(ident, t)
    x0, x1 = ident.eye_dx - 0.45 * ident.brow_len, ident.eye_dx + 0.55 * ident.brow_len
    xs = sorted((side * x0, side * x1))
    return (xs[0], float(hi.min()), xs[1], float(lo.max()))


def brow_centre(ident: Identity, t: np.ndarray, raise_: float) -> np.ndarray:
    """y of the brow's centre line at t (0 = inner end, 1 = outer end)."""
    tc = np.clip(t, 0.0, 1.0)
    return (ident.eye_y - ident.brow_gap - raise_ * BROW_RANGE * (1 + BROW_INNER * (1 - tc))
            - ident.brow_arch * 4 * tc * (1 - tc) + ident.brow_slant * (tc - 0.5))


def brow_half_thickness(ident: Identity, t: np.ndarray) -> np.ndarray:
    tc = np.clip(t, 0.0, 1.0)
    return 0.5 * ident.brow_thick * (1 - 0.45 * tc * tc)


def eye_openness(eye_open: float, blink: float) -> float:
    """Lid aperture 0 (shut) .. 1 (wide) from the eye_open and blink parameters."""
    return float(np.clip(0.75 + 0.25 * eye_open, 0.0, 1.0) * (1.0 - np.clip(blink, 0.0, 1.0)))


def eye_curves(ident: Identity, x: np.ndarray, side: int, openness: float) -> tuple[np.ndarray, np.ndarray]:
    """y of the upper lid line and of the lower eye line."""
    s = np.clip((x - side * ident.eye_dx) / ident.eye_w, -1.0, 1.0)
    h = (1 - s * s) ** 0.55
    lower = ident.eye_y + 0.55 * ident.eye_h * h
    return lower - 1.7 * ident.eye_h * openness * h, lower


def face_distance(ident: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the face outline (negative inside)."""
    yn = (y - ident.face_cy) / ident.face_ry
    taper = 1 - ident.chin_taper * np.clip(yn, 0, 1)
    xn = x / (ident.face_rx * taper)
    n = ident.face_power
    k = (np.abs(xn) ** n + np.abs(yn) ** n) ** (1 / n)
    return (k - 1) * min(ident.face_rx * 0.85, ident.face_ry)


def ellipse_distance(x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """First-order signed distance to an axis-aligned ellipse centred at the origin."""
    k = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    g = np.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2) + 1e-9
    return (k * k - k) / g


def hair_geometry(ident: Identity) -> tuple[float, float, float, float]:
    """(rx, top, cy, bottom) of the front hair cap; bottom is where side locks end."""
    buzz = ident.hair_style == "buzz"
    rx = ident.face_rx + (0.01 if buzz else 0.6 * ident.hair_volume)
    top = ident.face_cy - ident.face_ry - (0.01 if buzz else ident.hair_volume)
    bottom = ident.face_cy + (0.1 if ident.hair_style in ("long", "bob") else -0.1)
    return rx, top, ident.face_cy + 0.05, bottom


def hair_distance(ident: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to the front hair (cap above the hairline, side locks for long styles)."""
    if ident.hair_style == "bald":
        return np.full(np.broadcast(x, y).shape, 10.0, np.float32)
    rx, top, cy, bottom = hair_geometry(ident)
    cap = ellipse_distance(x, y - cy, rx, cy - top)
    if ident.hair_style == "curly":
        cap = cap - 0.02 * np.abs(np.sin(9 * np.arctan2(y - cy, x)))
    fx = x / ident.face_rx
    if ident.hair_style in ("bob", "curly"):  # fringe: flatter and lower
        line = ident.hairline + 0.08 * ident.face_ry * fx**2 + 0.4 * ident.hair_part * fx
    else:
        line = ident.hairline + 0.22 * ident.face_ry * fx**2 + ident.hair_part * fx
    d = np.maximum(cap, y - line)
    if ident.hair_style in ("long", "bob"):  # side locks with rounded ends
        outline = ellipse_distance(x, y - (top + bottom) / 2, rx, (bottom - top) / 2)
        d = np.minimum(d, np.maximum(0.86 * ident.face_rx - np.abs(x), outline))
    return d


# ---- layout validation ----

def _grid(box: Box, pad: float, n: int = 13) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(box[0] - pad, box[2] + pad, n)
    ys = np.linspace(box[1] - pad, box[3] + pad, n)
    return np.meshgrid(xs, ys)


def _apart(a: Box, b: Box, gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


@functools.lru_cache(maxsize=4096)
def layout_problems(ident: Identity) -> tuple[str, ...]:
    """Why segmenting a feature box of this identity could see something else (empty if fine)."""
    problems = []
    measured = {"mouth": ident.mouth_box(), "nose": ident.nose_box(),
                "brow_l": ident.brow_box(-1), "brow_r": ident.brow_box(1),
                "eye_l": ident.eye_box(-1), "eye_r": ident.eye_box(1)}
    others = {"cheek_l": ident.cheek_box(-1), "cheek_r": ident.cheek_box(1)}
    boxes = {**measured, **others}
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if not _apart(boxes[a], boxes[b], SEPARATION):
                problems.append(f"{a}/{b}")
    for name, box in measured.items():
        x, y = _grid(box, SEPARATION / 2)
        if (face_distance(ident, x, y) > -RIM).any():
            problems.append(f"{name} near the face outline")
        if (hair_distance(ident, x, y) < 0).any():
            problems.append(f"{name} under hair")
    chin = ident.face_cy + ident.face_ry * (1 - 0.3 * ident.chin_taper)
    if measured["mouth"][3] > chin - 0.05:
        problems.append("mouth/chin")
    return tuple(problems)


# ---- identity sampling ----

def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (float(r), float(g), float(b))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    r, g, bl = (float(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return (r, g, bl)


def _scale(a: RGB, f: float) -> RGB:
    r, g, b = (float(np.clip(x * f, 0, 1)) for x in a)
    return (r, g, b)


def _dist(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _unmixable(colors: list[RGB], min_dist: float = 0.12) -> bool:
    """Colours pairwise distinct and affinely independent enough for barycentric unmixing."""
    for i in range(len(colors)):
        for j in range(i + 1, len(colors)):
            if _dist(colors[i], colors[j]) < min_dist:
                return False
    m = np.array(colors[1:]) - np.array(colors[0])
    sv = np.linalg.svd(m, compute_uv=False)
    return bool(sv[-1] > 0.04)


def _sample_colors(rng: np.random.Generator) -> dict[str, RGB]:
    u = rng.uniform
    if rng.random() < 0.1:  # fantasy skin
        skin = _hsv(u(0, 1), u(0.25, 0.55), u(0.55, 0.9))
    else:
        skin = _mix((0.98, 0.86, 0.76), (0.36, 0.23, 0.16), u(0, 1))
        skin = _mix(skin, _hsv(u(0.02, 0.1), 0.5, 0.8), u(0, 0.15))
    lum = sum(skin) / 3
    lip = _mix(_scale(skin, u(0.72, 0.9)), _hsv(u(-0.03, 0.02), u(0.45, 0.75), u(0.45, 0.85)), u(0.35, 0.7))
    mouth = _hsv(u(-0.02, 0.03), u(0.45, 0.8), u(0.1, 0.24))
    nose = _scale(skin, u(0.6, 0.72) if lum > 0.4 else u(0.5, 0.62))
    hair = [
        _hsv(u(0.05, 0.1), u(0.3, 0.6), u(0.05, 0.15)),  # black
        _hsv(u(0.05, 0.1), u(0.5, 0.8), u(0.2, 0.45)),  # brown
        _hsv(u(0.1, 0.14), u(0.35, 0.6), u(0.7, 0.9)),  # blond
        _hsv(u(0.02, 0.06), u(0.7, 0.9), u(0.5, 0.75)),  # red
        _hsv(0.0, 0.0, u(0.55, 0.85)),  # grey / white
        _hsv(u(0, 1), u(0.5, 0.9), u(0.4, 0.9)),  # dyed
        _hsv(u(0.05, 0.1), u(0.5, 0.8), u(0.15, 0.3)),  # dark brown
    ][int(rng.integers(0, 7))]
    brow = _scale(hair, u(0.55, 0.85))
    if _dist(brow, skin) < 0.35:  # brows must stand out from the skin
        brow = _scale(skin, 0.35) if lum > 0.3 else _mix(skin, (0.02, 0.02, 0.02), 0.8)
    iris = [_hsv(u(0.55, 0.62), u(0.4, 0.8), u(0.45, 0.8)), _hsv(u(0.25, 0.4), u(0.4, 0.7), u(0.35, 0.6)),
            _hsv(u(0.05, 0.1), u(0.5, 0.9), u(0.2, 0.45)), _hsv(u(0.5, 0.6), u(0.05, 0.2), u(0.4, 0.6))][
        int(rng.integers(0, 4))]
    bg_h = u(0, 1)
    return {
        "skin": skin, "lip": lip, "mouth": mouth, "nose": nose, "hair": hair, "brow": brow, "iris": iris,
        "sclera": _hsv(u(0.05, 0.6), u(0, 0.08), u(0.88, 0.98)),
        "blush_color": _hsv(u(-0.02, 0.03), u(0.45, 0.7), u(0.75, 0.95)),
        "shirt": _hsv(u(0, 1), u(0.1, 0.9), u(0.2, 0.95)),
        "bg_top": _hsv(bg_h, u(0.05, 0.6), u(0.35, 0.95)),
        "bg_bottom": _hsv(bg_h + u(-0.15, 0.15), u(0.05, 0.6), u(0.2, 0.9)),
    }


def _sample_identity(rng: np.random.Generator, seed: int) -> Identity:
    u = rng.uniform
    colors = _sample_colors(rng)
    while not _unmixable([colors["skin"], colors["lip"], colors["mouth"]]):
        colors = _sample_colors(rng)
    face_cy, face_rx, face_ry = u(0.0, 0.08), u(0.52, 0.64), u(0.7, 0.8)
    eye_y = face_cy + u(-0.2, -0.1)
    eye_h = u(0.038, 0.054)
    nose_y = eye_y + u(0.2, 0.25)
    mouth_y = nose_y + u(0.19, 0.24)
    return Identity(
        seed=seed, face_cy=face_cy, face_rx=face_rx, face_ry=face_ry, face_power=u(2.0, 2.8),
        chin_taper=u(0.0, 0.2), ear_y=eye_y + u(0.06, 0.12), ear_rx=u(0.06, 0.09), ear_ry=u(0.1, 0.14),
        neck_rx=face_rx * u(0.42, 0.55),
        eye_y=eye_y, eye_dx=u(0.19, 0.24), eye_w=u(0.085, 0.115), eye_h=eye_h, iris_r=eye_h * u(0.95, 1.2),
        lash=u(0.01, 0.018), brow_gap=u(0.19, 0.24), brow_len=u(0.17, 0.23), brow_thick=u(0.028, 0.045),
        brow_arch=u(0.0, 0.025), brow_slant=u(-0.012, 0.02),
        nose_y=nose_y, nose_w=u(0.045, 0.07), nose_h=u(0.022, 0.034),
        mouth_y=mouth_y, mouth_w=u(0.14, 0.19), upper_lip=u(0.024, 0.04), lower_lip=u(0.03, 0.05),
        max_gap=u(0.14, 0.19), cheek_x=u(0.36, 0.44), cheek_y=nose_y + u(-0.03, 0.02),
        cheek_r=u(0.06, 0.08), blush=u(0.0, 0.35),
        hair_style=HAIR_STYLES[int(rng.integers(0, len(HAIR_STYLES)))],
        hairline=face_cy - face_ry * u(0.72, 0.88), hair_volume=u(0.04, 0.12), hair_part=u(-0.06, 0.06),
        body_rx=u(0.75, 1.05),
        **colors,
    )
