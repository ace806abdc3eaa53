"""Measure mouth opening, mouth corners, brows and eyes on RGB frames of a known identity.

Works on any frame that shows the identity (our renders or a model's output):

1. Head pose: Lucas-Kanade alignment (shift + tilt, coarse to fine) of the frame to a neutral
   render of the identity, using only rigid parts (face outline, hair, ears, nose).
2. Each feature is read inside its box (:mod:`export.data.identity`), in pose-corrected head
   coordinates, by linear colour unmixing: anti-aliased edge pixels are linear mixtures of two
   known colours, so the summed weights give sub-pixel areas and centroids.
3. Raw values are calibrated per identity with a few renders of known parameters, so that on
   clean renders ``mouth_open`` ≈ jaw_open·(1 - lip_closure), ``corner_lift`` ≈ smile,
   ``brow_height`` ≈ brow_raise and ``eye_open`` ≈ lid aperture (0 shut .. 1 wide).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .face import FaceRenderer
from .identity import SEPARATION, Box, Identity, face_distance, hair_distance
from .params import PARAM_INDEX, PIVOT, P, Pose, image_to_head, pixel_grid

MEASURES = ("mouth_open", "corner_lift", "brow_height", "eye_open")


@dataclass(frozen=True)
class Measurement:
    """Calibrated feature measurements of one frame and the estimated head pose."""

    mouth_open: float
    corner_lift: float
    brow_height: float
    eye_open: float
    pose: Pose


def _params(**values: float) -> np.ndarray:
    p = np.zeros(P, np.float32)
    for k, v in values.items():
        p[PARAM_INDEX[k]] = v
    return p


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) by shifted sums (no BLAS: tiny products thrash its threads)."""
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    n, m = img.shape[:2]
    pad = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
    out = sum(k[j] * pad[j:j + n] for j in range(2 * r + 1))
    pad = np.pad(out, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[j] * pad[:, j:j + m] for j in range(2 * r + 1))


def _bilinear(img: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) at fractional pixel coordinates (edge-clamped)."""
    h, w = img.shape[:2]
    cx, cy = np.clip(cx, 0, w - 1.001), np.clip(cy, 0, h - 1.001)
    x0, y0 = cx.astype(np.int64), cy.astype(np.int64)
    fx, fy = (cx - x0)[:, None], (cy - y0)[:, None]
    a, b = img[y0, x0], img[y0, x0 + 1]
    c, d = img[y0 + 1, x0], img[y0 + 1, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


class FaceMeasurer:
    """Measures frames of one identity at one resolution."""

    def __init__(self, identity: Identity, size: int) -> None:
        self.id, self.size = identity, int(size)
        self.px = 2.0 / self.size
        self.u, self.v = pixel_grid(self.size)
        self.renderer = FaceRenderer(identity, self.size)
        self.reference = self.renderer.render(np.zeros(P, np.float32)).astype(np.float32) / 255
        self._rigid = self._rigid_mask()
        # identity colours as the renderer's uint8 output holds them
        col = {k: np.round(np.array(getattr(identity, k), np.float64) * 255) / 255
               for k in ("skin", "lip", "mouth", "brow", "sclera", "iris")}
        self._skin = col["skin"]
        # mouth: skin/lip/interior unmixing; brows: skin/brow projection; eyes: skin vs each eye colour
        self._mouth_pinv = np.linalg.pinv(np.stack([col["lip"] - col["skin"], col["mouth"] - col["skin"]], 1))
        self._brow_dir = (col["brow"] - col["skin"]) / np.sum((col["brow"] - col["skin"]) ** 2)
        eye_cols = [col["sclera"], col["iris"], np.full(3, 0.04), 0.5 * col["brow"]]
        self._eye_dirs = np.stack([c - col["skin"] for c in eye_cols])
        self._calibrate()

    # ---- pose ----

    def _rigid_mask(self) -> np.ndarray:
        i, pad = self.id, SEPARATION / 2
        x, y = self.u, self.v  # reference rendered at rest: head coords = image coords
        head = (face_distance(i, x, y) < 0.08) | (hair_distance(i, x, y) < 0.08)
        head &= y < min(i.face_cy + i.face_ry + 0.04, 0.62)  # not the static shirt line
        boxes = [i.mouth_box(), i.eye_box(-1), i.eye_box(1), i.brow_box(-1), i.brow_box(1), i.cheek_box(-1),
                 i.cheek_box(1)]
        for b in boxes:
            head &= ~((x > b[0] - pad) & (x < b[2] + pad) & (y > b[1] - pad) & (y < b[3] + pad))
        return head

    SIGMAS = (3.0, 1.5, 0.7)
    """Blur (pixels at 64×64) of the coarse-to-fine alignment levels."""

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one measurer per identity; cached deliberately)
    def _blurred_reference(self, sigma: float) -> np.ndarray:
        return _blur(self.reference, sigma * self.size / 64)

    def estimate_pose(self, frame: np.ndarray, iterations: int = 8) -> Pose:
        """Head pose (dx, dy, tilt) of ``frame`` by aligning its rigid parts to the neutral render."""
        img = np.asarray(frame, np.float32) / 255
        q = np.zeros(3)
        ys, xs = np.nonzero(self._rigid)
        hx, hy = self.u[ys, xs].astype(np.float64), self.v[ys, xs].astype(np.float64)
        a, b = hx - PIVOT[0], hy - PIVOT[1]
        for sigma in self.SIGMAS:
            blur_i = _blur(img, sigma * self.size / 64)
            blur_r = self._blurred_reference(sigma)[ys, xs]
            gy, gx = np.gradient(blur_i, axis=(0, 1))
            for _ in range(iterations):
                c, s = np.cos(q[2]), np.sin(q[2])
                u = c * a - s * b + PIVOT[0] + q[0]
                v = s * a + c * b + PIVOT[1] + q[1]
                cx, cy = (u + 1) / self.px - 0.5, (v + 1) / self.px - 0.5
                r = (_bilinear(blur_i, cx, cy) - blur_r).reshape(-1)
                ix = _bilinear(gx, cx, cy) / self.px
                iy = _bilinear(gy, cx, cy) / self.px
                dth = (-s * a - c * b)[:, None] * ix + (c * a - s * b)[:, None] * iy
                jac = np.stack([ix.reshape(-1), iy.reshape(-1), dth.reshape(-1)], 1)
                hess = np.einsum("ni,nj->ij", jac, jac) + 1e-9 * np.eye(3)
                step = np.linalg.solve(hess, -np.einsum("ni,n->i", jac, r))
                q += step
                if abs(step[0]) + abs(step[1]) < 1e-3 * self.px and abs(step[2]) < 1e-4:
                    break
        return (float(q[0]), float(q[1]), float(q[2]))

    # ---- raw feature readings ----

    def _pixels(self, img: np.ndarray, box: Box, pose: Pose, pad: float = 0.75) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Colours, head coordinates and soft in-box weights of the pixels around a box grown by
        ``pad`` pixels (the anti-aliased fringe)."""
        pad *= self.px
        hx, hy = image_to_head(self.u, self.v, pose)
        inside = _soft_box(hx, hy, (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), self.px)
        ys, xs = np.nonzero(inside > 0)
        return img[ys, xs].astype(np.float64), hx[ys, xs], hy[ys, xs], inside[ys, xs]

    def _raw(self, frame: np.ndarray, pose: Pose) -> np.ndarray:
        i, px = self.id, self.px
        img = np.asarray(frame, np.float64) / 255
        # mouth: interior area per unit width in a central strip; corner height from lip+interior mass
        col, hx, hy, wbox = self._pixels(img, i.mouth_box(), pose)
        w = _dead_zone(np.einsum("nc,kc->nk", col - self._skin, self._mouth_pinv))
        strip = 0.3 * i.mouth_w
        ws = wbox * np.clip((strip - np.abs(hx)) / px + 0.5, 0, 1)
        opening = _strip_height(w[:, 1], ws, i, px)
        # corner: centroid of the outer quarter of the mouth, its half-width from the lips' x spread
        lips = w[:, 0] * wbox
        half = np.sqrt((lips * hx * hx).sum() / max(lips.sum(), 1e-9) / _LIP_S2)
        outer = np.clip(w.sum(1), 0, 1) * wbox * np.clip((np.abs(hx) / max(half, 1e-6) - 0.75) / 0.1, 0, 1)
        corner = float(-(outer * hy).sum() / max(outer.sum(), 1e-9))
        # brows: mean height of the brow colour's centroid, both sides
        brow = 0.0
        for side in (-1, 1):
            col, _, hy, wbox = self._pixels(img, i.brow_box(side), pose, pad=1.1)  # tent-filtered edges
            wb = _dead_zone(np.einsum("nc,c->n", col - self._skin, self._brow_dir)) * wbox
            brow += -0.5 * float((wb * hy).sum() / max(wb.sum(), 1e-9))
        # eyes: non-skin area (aperture + a constant lash band)
        eye = 0.0
        for side in (-1, 1):
            col, _, _, wbox = self._pixels(img, i.eye_box(side), pose)
            diff = col - self._skin
            alpha = _dead_zone(np.einsum("nc,kc->nk", diff, self._eye_dirs) / np.sum(self._eye_dirs**2, 1))
            resid = np.linalg.norm(diff[:, None, :] - alpha[..., None] * self._eye_dirs[None], axis=2)
            best = alpha[np.arange(len(col)), np.argmin(resid, 1)]
            eye += float((best * wbox).sum()) * px * px
        return np.array([opening, corner, brow, eye])

    def _calibrate(self) -> None:
        """Affine maps from raw readings to parameter units, from renders of known parameters."""
        zero = (0.0, 0.0, 0.0)
        rest = self._raw(self.renderer.render(_params()), zero)
        full = np.array([
            self._raw(self.renderer.render(_params(jaw_open=1.0)), zero)[0],
            self._raw(self.renderer.render(_params(smile=1.0)), zero)[1],
            self._raw(self.renderer.render(_params(brow_raise=1.0)), zero)[2],
            self._raw(self.renderer.render(_params(blink=1.0)), zero)[3],
        ])
        # mouth: 0 at rest (closed) -> 1 fully open; corners/brows: 0 at rest -> 1 at +1;
        # eyes: 0 when shut, 0.75 at rest (the renderer's neutral aperture)
        self._offset = np.array([rest[0], rest[1], rest[2], full[3]])
        self._scale = np.array([full[0] - rest[0], full[1] - rest[1], full[2] - rest[2],
                                (rest[3] - full[3]) / 0.75])

    # ---- public ----

    def measure(self, frame: np.ndarray, pose: Pose | None = None) -> Measurement:
        """Measure one (size, size, 3) uint8 frame; ``pose`` is estimated when not given."""
        if frame.shape[:2] != (self.size, self.size):
            raise ValueError(f"frame is {frame.shape[:2]}, measurer expects {self.size}x{self.size}")
        pose = self.estimate_pose(frame) if pose is None else pose
        vals = (self._raw(frame, pose) - self._offset) / self._scale
        return Measurement(*(float(v) for v in vals), pose=pose)


_LIP_S2 = 0.2444
"""Mean of (x / half-width)² over the lips' area (thickness ∝ 1 - 0.75 s²)."""
DEAD_ZONE = 0.01
"""Colour weights below this count as zero (uint8 rounding, noise)."""


def _dead_zone(w: np.ndarray) -> np.ndarray:
    return np.clip((w - DEAD_ZONE) / (1 - DEAD_ZONE), 0, 1)


def _strip_height(weight: np.ndarray, strip: np.ndarray, ident: Identity, px: float) -> float:
    """Mean vertical extent of ``weight`` over a vertical strip (head units)."""
    columns = strip.sum() * px * px / max(ident.mouth_box()[3] - ident.mouth_box()[1] + 1.5 * px, 1e-9)
    return float((weight * strip).sum() * px * px / max(columns, 1e-9))


def _soft_box(x: np.ndarray, y: np.ndarray, box: Box, px: float) -> np.ndarray:
    """Pixel weights of a box, anti-aliased like the renderer's edges."""
    wx = np.clip(np.minimum(x - box[0], box[2] - x) / px + 0.5, 0, 1)
    wy = np.clip(np.minimum(y - box[1], box[3] - y) / px + 0.5, 0, 1)
    return wx * wy


@functools.lru_cache(maxsize=64)
def measurer(identity: Identity, size: int) -> FaceMeasurer:
    """A cached :class:`FaceMeasurer` (building one renders a few calibration frames)."""
    return FaceMeasurer(identity, size)


def measure_frames(frames: np.ndarray, identity: Identity, poses: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Measure (T, H, W, 3) frames: arrays for each of :data:`MEASURES` plus ``pose`` (T, 3)."""
    m = measurer(identity, int(frames.shape[1]))
    out = [m.measure(f, None if poses is None else tuple(poses[t])) for t, f in enumerate(frames)]
    res = {k: np.array([getattr(o, k) for o in out], np.float32) for k in MEASURES}
    res["pose"] = np.array([o.pose for o in out], np.float32)
    return res


def measure_mouth_opening(frame: np.ndarray, identity: Identity) -> float:
    """Lip gap in units of the identity's widest opening (≈ jaw_open·(1 - lip_closure))."""
    return measurer(identity, frame.shape[0]).measure(frame).mouth_open


def measure_mouth_corners(frame: np.ndarray, identity: Identity) -> float:
    """Mouth-corner lift in smile units (+1 = full smile, -1 = corners fully down)."""
    return measurer(identity, frame.shape[0]).measure(frame).corner_lift


def measure_brow_height(frame: np.ndarray, identity: Identity) -> float:
    """Brow height in brow_raise units (0 = rest)."""
    return measurer(identity, frame.shape[0]).measure(frame).brow_height


def non_mouth_mask(identity: Identity, size: int, pose: Pose = (0.0, 0.0, 0.0),
                   margin: float = SEPARATION) -> np.ndarray:
    """Boolean (size, size) mask of the pixels outside the mouth box (grown by ``margin``) under ``pose``."""
    u, v = pixel_grid(size)
    hx, hy = image_to_head(u, v, pose)
    b = identity.mouth_box()
    return ~((hx > b[0] - margin) & (hx < b[2] + margin) & (hy > b[1] - margin) & (hy < b[3] + margin))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between uint8 images (or batches), optionally only over ``mask`` (H, W)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        diff = diff[..., mask, :]
    mse = float(diff.mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


__all__ = ["MEASURES", "FaceMeasurer", "Measurement", "measure_brow_height", "measure_frames",
           "measure_mouth_corners", "measure_mouth_opening", "measurer", "non_mouth_mask", "psnr"]
