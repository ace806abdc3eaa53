"""Fast anti-aliased face renderer (numpy only).

Every shape is an implicit region in head coordinates whose edge coverage comes from a signed
distance estimate, ``clip(0.5 - d / pixel, 0, 1)``: edges are anti-aliased without
supersampling, and colours mix linearly across an edge, which keeps sub-pixel measurements
(export/data/measure.py) exact. Each shape is evaluated only on the pixels of its bounding box.
"""

from __future__ import annotations

import numpy as np

from .identity import (
    COLOR_KEYS,
    RIM,
    Box,
    Identity,
    brow_centre,
    brow_half_thickness,
    ellipse_distance,
    eye_curves,
    eye_openness,
    face_distance,
    hair_distance,
    hair_geometry,
    mouth_curves,
)
from .params import CHEEK_RANGE, PARAM_INDEX, Pose, head_to_image, image_to_head, pixel_grid, pose_of

_I = PARAM_INDEX


def _cov(d: np.ndarray, px: float) -> np.ndarray:
    """Coverage of a pixel whose centre is at signed distance ``d`` (negative inside)."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _band(y: np.ndarray, top: np.ndarray, bottom: np.ndarray, px: float) -> np.ndarray:
    """Exact vertical box-filter coverage of the band top < y < bottom (also when thinner than a
    pixel, so thin lines keep their mass and a sub-pixel position)."""
    half = 0.5 * px
    return np.clip(np.minimum(y + half, bottom) - np.maximum(y - half, top), 0.0, px) / px


def _tent_cdf(u: np.ndarray, px: float) -> np.ndarray:
    """Integral of a tent filter of half-width ``px`` up to ``u``."""
    x = np.clip(u / px, -1.0, 1.0)
    return np.where(x < 0, 0.5 * (1 + x) ** 2, 1 - 0.5 * (1 - x) ** 2)


def _band_tent(y: np.ndarray, top: np.ndarray, bottom: np.ndarray, px: float) -> np.ndarray:
    """Tent-filtered coverage of the band top < y < bottom: softer than :func:`_band`, but the
    coverage-weighted mean of the pixel centres is exactly the band's centre at any sub-pixel
    position (used for brows, whose height is measured by their centroid)."""
    return np.clip(_tent_cdf(bottom - y, px) - _tent_cdf(top - y, px), 0.0, 1.0)


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    img += alpha[..., None] * (color - img)


class FaceRenderer:
    """Draws one identity at one resolution."""

    def __init__(self, identity: Identity, size: int = 64) -> None:
        self.id, self.size = identity, int(size)
        self.px = 2.0 / self.size
        self.u, self.v = pixel_grid(self.size)
        self.col = {k: np.array(getattr(identity, k), np.float32) for k in COLOR_KEYS}
        t = np.clip((self.v + 1) / 2, 0, 1)[..., None]
        self._background = (self.col["bg_top"] * (1 - t) + self.col["bg_bottom"] * t).astype(np.float32)
        body = ellipse_distance(self.u, self.v - 1.32, identity.body_rx, 0.5)
        self._body_alpha = _cov(body, self.px).astype(np.float32)
        self._body_rows = slice(int(np.argmax(self._body_alpha.max(1) > 0)), self.size)

    def render(self, params: np.ndarray) -> np.ndarray:
        """Render one frame from a (P,) parameter vector: (size, size, 3) uint8."""
        p = np.asarray(params, np.float32)
        img = self._background.copy()
        pose = pose_of(p)
        i = self.id
        if i.hair_style in ("long", "curly", "bob"):
            self._back_hair(img, pose)
        self._neck(img, pose)
        rows = self._body_rows
        _blend(img[rows], self._body_alpha[rows], self.col["shirt"])
        self._ears(img, pose)
        self._face(img, pose)
        self._hair(img, pose)
        self._cheeks(img, pose, float(p[_I["cheek_raise"]]), float(p[_I["smile"]]))
        self._nose(img, pose)
        openness = eye_openness(float(p[_I["eye_open"]]), float(p[_I["blink"]]))
        for side in (-1, 1):
            self._eye(img, pose, side, openness)
            self._brow(img, pose, side, float(p[_I["brow_raise"]]))
        self._mouth(img, pose, p)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    def render_sequence(self, params: np.ndarray) -> np.ndarray:
        """Render (T, P) parameters into (T, size, size, 3) uint8 frames."""
        params = np.asarray(params, np.float32)
        out = np.empty((len(params), self.size, self.size, 3), np.uint8)
        for t, p in enumerate(params):
            out[t] = self.render(p)
        return out

    # ---- helpers ----

    def _region(self, box: Box, pose: Pose) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Pixels covering a head-coordinate box under ``pose``, and their head coordinates."""
        x = np.array([box[0], box[2], box[0], box[2]])
        y = np.array([box[1], box[1], box[3], box[3]])
        iu, iv = head_to_image(x, y, pose)
        n, px = self.size, self.px
        c0, c1 = max(0, int((iu.min() + 1) / px) - 1), min(n, int(np.ceil((iu.max() + 1) / px)) + 1)
        r0, r1 = max(0, int((iv.min() + 1) / px) - 1), min(n, int(np.ceil((iv.max() + 1) / px)) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        reg = (slice(r0, r1), slice(c0, c1))
        hx, hy = image_to_head(self.u[reg], self.v[reg], pose)
        return reg, hx, hy

    # ---- shapes, back to front ----

    def _back_hair(self, img: np.ndarray, pose: Pose) -> None:
        i = self.id
        rx = i.face_rx + i.hair_volume + 0.04
        top = i.face_cy - i.face_ry - i.hair_volume
        bottom = i.face_cy + (0.65 if i.hair_style == "long" else 0.25)
        cy, ry = (top + bottom) / 2, (bottom - top) / 2
        r = self._region((-rx, top, rx, bottom), pose)
        if r is None:
            return
        reg, x, y = r
        if i.hair_style == "long":  # squarish bottom
            d = (np.sqrt((x / rx) ** 2 + ((y - cy) / ry) ** 6) - 1) * min(rx, ry)
        else:
            d = ellipse_distance(x, y - cy, rx, ry)
        _blend(img[reg], _cov(d, self.px), self.col["hair"] * 0.8)

    def _neck(self, img: np.ndarray, pose: Pose) -> None:
        i = self.id
        top = i.face_cy + 0.3 * i.face_ry
        r = self._region((-i.neck_rx, top, i.neck_rx, 1.4), pose)
        if r is None:
            return
        reg, x, y = r
        a = _cov(np.abs(x) - i.neck_rx, self.px) * _cov(top - y, self.px)
        _blend(img[reg], a, self.col["skin"] * 0.8)

    def _ears(self, img: np.ndarray, pose: Pose) -> None:
        i = self.id
        yn = (i.ear_y - i.face_cy) / i.face_ry
        half = i.face_rx * (1 - abs(yn) ** i.face_power) ** (1 / i.face_power)
        for side in (-1, 1):
            cx = side * (half - 0.2 * i.ear_rx)
            r = self._region((cx - i.ear_rx, i.ear_y - i.ear_ry, cx + i.ear_rx, i.ear_y + i.ear_ry), pose)
            if r is None:
                continue
            reg, x, y = r
            _blend(img[reg], _cov(ellipse_distance(x - cx, y - i.ear_y, i.ear_rx, i.ear_ry), self.px),
                   self.col["skin"] * 0.9)
            inner = ellipse_distance(x - cx - side * 0.2 * i.ear_rx, y - i.ear_y, 0.45 * i.ear_rx, 0.6 * i.ear_ry)
            _blend(img[reg], 0.5 * _cov(inner, self.px), self.col["skin"] * 0.7)

    def _face(self, img: np.ndarray, pose: Pose) -> None:
        i = self.id
        r = self._region((-i.face_rx, i.face_cy - i.face_ry, i.face_rx, i.face_cy + i.face_ry), pose)
        if r is None:
            return
        reg, x, y = r
        d = face_distance(i, x, y)
        shade = np.clip(1 + d / RIM, 0, 1)[..., None]  # darker rim, flat inside
        color = self.col["skin"] * (1 - 0.12 * shade)
        img[reg] += _cov(d, self.px)[..., None] * (color - img[reg])

    def _hair(self, img: np.ndarray, pose: Pose) -> None:
        i = self.id
        if i.hair_style == "bald":
            return
        rx, top, _, bottom = hair_geometry(i)
        r = self._region((-rx - 0.02, top - 0.02, rx + 0.02, max(bottom, i.hairline + 0.3)), pose)
        if r is None:
            return
        reg, x, y = r
        color = self.col["hair"] if i.hair_style != "buzz" else 0.6 * self.col["hair"] + 0.4 * self.col["skin"]
        _blend(img[reg], _cov(hair_distance(i, x, y), self.px), color)

    def _cheeks(self, img: np.ndarray, pose: Pose, raise_: float, smile: float) -> None:
        i = self.id
        strength = min(0.6, i.blush * (0.5 + 0.5 * raise_) + 0.25 * raise_)
        if strength <= 0.005:
            return
        lift = CHEEK_RANGE * max(raise_, 0.6 * max(smile, 0.0))
        for side in (-1, 1):
            cx, cy, rad = side * i.cheek_x, i.cheek_y - lift, i.cheek_r
            r = self._region((cx - rad, cy - rad, cx + rad, cy + rad), pose)
            if r is None:
                continue
            reg, x, y = r
            q = np.clip(1 - ((x - cx) ** 2 + (y - cy) ** 2) / rad**2, 0, 1)
            _blend(img[reg], strength * q * q, self.col["blush_color"])

    def _nose(self, img: np.ndarray, pose: Pose) -> None:
        i = self.id
        r = self._region(i.nose_box(), pose)
        if r is None:
            return
        reg, x, y = r
        _blend(img[reg], _cov(ellipse_distance(x, y - i.nose_y, i.nose_w, i.nose_h), self.px), self.col["nose"])

    def _eye(self, img: np.ndarray, pose: Pose, side: int, openness: float) -> None:
        i = self.id
        r = self._region(i.eye_box(side), pose)
        if r is None:
            return
        reg, x, y = r
        px, cx = self.px, side * i.eye_dx
        upper, lower = eye_curves(i, x, side, openness)
        aperture = _cov(np.abs(x - cx) - i.eye_w, px) * _band(y, upper, lower, px)
        sub = img[reg]
        _blend(sub, aperture, self.col["sclera"])
        rad = np.sqrt((x - cx) ** 2 + (y - (i.eye_y - 0.15 * i.eye_h)) ** 2)
        _blend(sub, aperture * _cov(rad - i.iris_r, px), self.col["iris"])
        _blend(sub, aperture * _cov(rad - 0.5 * i.iris_r, px), np.full(3, 0.04, np.float32))
        lash = _cov(np.abs(x - cx) - 1.05 * i.eye_w, px) * _band(y, upper - i.lash, upper, px)
        _blend(sub, lash, 0.5 * self.col["brow"])

    def _brow(self, img: np.ndarray, pose: Pose, side: int, raise_: float) -> None:
        i = self.id
        r = self._region(i.brow_box(side), pose)
        if r is None:
            return
        reg, x, y = r
        t = (side * x - (i.eye_dx - 0.45 * i.brow_len)) / i.brow_len  # 0 inner end .. 1 outer end
        centre, half = brow_centre(i, t, raise_), brow_half_thickness(i, t)
        ends = _cov(np.maximum(-t, t - 1) * i.brow_len, self.px)
        _blend(img[reg], ends * _band_tent(y, centre - half, centre + half, self.px), self.col["brow"])

    def _mouth(self, img: np.ndarray, pose: Pose, p: np.ndarray) -> None:
        i = self.id
        r = self._region(i.mouth_box(), pose)
        if r is None:
            return
        reg, x, y = r
        w, up_out, up_in, lo_in, lo_out = mouth_curves(
            i, x, float(p[_I["jaw_open"]]), float(p[_I["lip_width"]]), float(p[_I["lip_round"]]),
            float(p[_I["lip_closure"]]), float(p[_I["smile"]]))
        px = self.px
        in_x = _cov(np.abs(x) - w, px)
        sub = img[reg]
        _blend(sub, in_x * _band(y, up_out, lo_out, px), self.col["lip"])
        _blend(sub, in_x * _band(y, up_in, lo_in, px), self.col["mouth"])
