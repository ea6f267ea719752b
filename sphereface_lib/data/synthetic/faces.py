"""Procedural face identities rendered onto the SphereFace 112x96 alignment template.

An identity is a latent vector (geometry: head and jaw, eyes, brows, nose, mouth, lips, ears; appearance: skin,
hair style / colour / hairline, facial hair, marks). Each image adds nuisance: pose, expression, illumination,
accessories, occlusion, background, blur, noise, JPEG artefacts and the alignment jitter of an imperfect
5-point detector. The face is aligned as in the paper (Sec. 4.1: five landmarks, similarity transform, 112x96).

Determinism: every random number of an image comes from ``SeedSequence([seed, identity, index])`` (see
:func:`image_rng`); pixels are composited with elementwise float32 operations only (add, subtract, multiply,
divide, sqrt, clamp, round to nearest even, each correctly rounded as IEEE 754 requires), in numpy and in
compiled per-image kernels (numba without fast-math: no reassociation, no fused multiply-add), so neither the
CPU's vector instructions nor the batch changes a bit; the uint8 post-processing uses OpenCV's fixed-point,
bit-exact 8-bit paths. Changing any of this changes :data:`GENERATOR_VERSION`, which is part of every cache
key. Large batches are spread over a pool of spawned worker processes (``workers``); since no image depends on
the others in its batch, that changes no bit either. The kernels compile on first use (a few seconds) and are
cached on disk (see :func:`_kernel`).
"""

from __future__ import annotations

import functools
import mmap
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numba
import numpy as np

# 1.1: the renderer of 1.0 in compiled kernels, with a correctly rounded float32 sqrt (1.0 used torch's
# vectorized sqrt, which is not; about one image in a thousand differs from 1.0, by 1 in one or two pixels).
GENERATOR_VERSION = "synthetic-faces-1.1"
TEMPLATE_SIZE = (112, 96)
# The five reference points (x, y) of the SphereFace template: eyes, nose tip, mouth corners (paper Sec. 4.1).
TEMPLATE_POINTS = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]]
)
OUTPUT_SIZES = ((112, 96), (56, 48), (28, 24))

_N_ID = 48     # uniforms per identity
_N_IMG_U = 64  # uniforms per image
_N_IMG_N = 16  # standard normals per image
_MAX_WORD = 2**32
# Image-uniform slots that switch something on or off; video frames keep them fixed (see video_nuisance).
_DISCRETE_SLOTS = (10, 11, 12, 13, 14, 20, 21, 22, 30, 31, 40, 41, 50, 51)


def image_rng(seed: int, identity: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one identity (stream 0), still image (1) or video endpoint (2, 3).

    ``SeedSequence`` pads the entropy words to its pool size before appending ``spawn_key``, so
    ``[seed, identity, index] + (stream,)`` never collides across streams.
    """
    for name, v in (("seed", seed), ("identity", identity), ("index", index)):
        if not 0 <= int(v) < _MAX_WORD:
            raise ValueError(f"{name}={v} is out of range: use an integer in [0, 2**32)")
    ss = np.random.SeedSequence([int(seed), int(identity), int(index)], spawn_key=(int(stream),))
    return np.random.Generator(np.random.PCG64(ss))


@functools.lru_cache(maxsize=65536)
def identity_latent(seed: int, identity: int) -> np.ndarray:
    """The latent vector (uniforms in [0, 1)) that fixes one identity's geometry and appearance."""
    z = image_rng(seed, identity, 0, 0).random(_N_ID)
    z.setflags(write=False)
    return z


def image_nuisance(seed: int, identity: int, index: int) -> np.ndarray:
    """The nuisance vector of still image ``index`` of ``identity``: ``_N_IMG_U`` uniforms then normals."""
    rng = image_rng(seed, identity, index, 1)
    return np.concatenate([rng.random(_N_IMG_U), rng.standard_normal(_N_IMG_N)])


def video_nuisance(seed: int, identity: int, video: int, num_frames: int) -> np.ndarray:
    """Nuisance vectors (num_frames, K) of one video: pose, expression and light move smoothly.

    Frames interpolate (smoothstep) between two endpoint draws that differ by a small step; the on/off slots
    (accessories, occlusion, hair style changes) are those of the first endpoint for the whole video.
    """
    a = image_rng(seed, identity, video, 2)
    b = image_rng(seed, identity, video, 3)
    start = np.concatenate([a.random(_N_IMG_U), a.standard_normal(_N_IMG_N)])
    step = np.concatenate([b.standard_normal(_N_IMG_U) * 0.12, b.standard_normal(_N_IMG_N) * 0.35])
    step[list(_DISCRETE_SLOTS)] = 0.0
    end = start + step
    end[:_N_IMG_U] = np.clip(end[:_N_IMG_U], 0.0, 0.999999)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    s = (t * t * (3.0 - 2.0 * t))[:, None]
    return start[None] * (1.0 - s) + end[None] * s


# ----------------------------------------------------------------------------------------------------------
# Parameters: latent and nuisance vectors -> named per-image quantities (float64 numpy, shape (B,)).
# ----------------------------------------------------------------------------------------------------------

_SKIN = np.array([[236, 200, 178], [222, 174, 140], [196, 144, 108], [160, 110, 76], [112, 74, 52], [74, 48, 34]])
_HAIR = np.array([[22, 18, 16], [50, 34, 24], [92, 62, 40], [150, 110, 62], [196, 160, 104], [140, 62, 30],
                  [150, 146, 140], [214, 210, 204]])
_IRIS = np.array([[60, 38, 24], [96, 64, 36], [70, 104, 140], [80, 110, 70], [40, 30, 26]])


def _lerp(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


def _palette(pal: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Colour along a palette, u in [0, 1) -> (B, 3), linearly interpolated between entries."""
    pos = u * (len(pal) - 1)
    i = np.minimum(pos.astype(np.int64), len(pal) - 2)
    f = (pos - i)[:, None]
    return pal[i] * (1 - f) + pal[i + 1] * f


@dataclass(frozen=True)
class Difficulty:
    """How strongly each nuisance acts; ``scale`` multiplies them all (the ``difficulty`` knob)."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.scale <= 3.0:
            raise ValueError(f"difficulty={self.scale} is out of range: use a value in [0, 3] (1 is the default)")


def _params(z: np.ndarray, v: np.ndarray, d: float) -> dict[str, np.ndarray]:
    """Named quantities for a batch: z (B, _N_ID) identity latents, v (B, K) nuisance vectors."""
    u, n = v[:, :_N_IMG_U], v[:, _N_IMG_U:]
    p: dict[str, np.ndarray] = {}
    # ---- pose (degrees), plausibly distributed: mostly near frontal, heavier tails in yaw
    p["yaw"] = np.clip(n[:, 0] * 16.0 * d, -50, 50)
    p["pitch"] = np.clip(n[:, 1] * 9.0 * d, -30, 30)
    sy, sp = np.sin(np.radians(p["yaw"])), np.sin(np.radians(p["pitch"]))
    # ---- head geometry (identity) + pose displacement of what is not aligned (aligned: eyes, nose, mouth)
    p["head_ax"] = _lerp(z[:, 0], 34.0, 44.0) * (1 - 0.12 * np.abs(sy))
    p["head_ay"] = _lerp(z[:, 1], 48.0, 58.0)
    p["jaw"] = _lerp(z[:, 2], 0.05, 0.45)
    p["head_cx"] = 48.0 - sy * 14.0
    p["head_cy"] = _lerp(z[:, 3], 58.0, 64.0) - sp * 6.0
    p["skin"] = _palette(_SKIN, z[:, 4] ** 1.3) + (z[:, 5:8] - 0.5) * 22.0
    p["blush"] = np.where(z[:, 8] < 0.35, _lerp(z[:, 8], 0.05, 0.25), 0.0)
    # ---- eyes (identity) : spacing, size, shape; closed eyes (expression)
    half = _lerp(z[:, 9], 15.8, 19.4)
    p["eye_y"] = 51.6 + _lerp(z[:, 10], -1.5, 1.5)
    p["eye_xl"] = 48.0 - half + sy * 2.0
    p["eye_xr"] = 48.0 + half + sy * 2.0
    p["eye_a"] = _lerp(z[:, 11], 5.0, 7.6)
    p["eye_b"] = _lerp(z[:, 12], 2.0, 3.6)
    p["eye_slant"] = _lerp(z[:, 13], -0.05, 0.05)
    p["iris"] = _palette(_IRIS, z[:, 14])
    p["iris_r"] = _lerp(z[:, 15], 2.2, 3.2)
    closed = u[:, 10] < 0.06 * d
    p["eye_open"] = np.where(closed, 0.0, np.clip(1.0 + n[:, 2] * 0.1 * d, 0.6, 1.2))
    p["gaze"] = np.clip(n[:, 3] * 0.8 * d, -1.5, 1.5)
    # ---- brows
    raised = u[:, 11] < 0.15 * d
    p["brow_y"] = p["eye_y"] - _lerp(z[:, 16], 7.0, 11.0) - np.where(raised, _lerp(u[:, 1], 1.5, 3.5), 0.0)
    p["brow_a"] = p["eye_a"] * _lerp(z[:, 17], 1.15, 1.6)
    p["brow_b"] = _lerp(z[:, 18], 1.0, 2.4)
    p["brow_arch"] = _lerp(z[:, 19], 0.0, 0.05)
    # ---- nose (aligned tip, displaced by pose)
    p["nose_y"] = 71.7 + _lerp(z[:, 20], -3.5, 3.5) + sp * 5.0
    p["nose_x"] = 48.0 + sy * 7.0
    p["nose_w"] = _lerp(z[:, 21], 4.0, 7.5)
    # ---- mouth (identity width / lips, expression smile)
    smile = np.where(u[:, 12] < 0.4, u[:, 2], 0.0) * min(1.0, 0.5 + 0.5 * d)
    p["smile"] = smile
    p["mouth_y"] = 92.3 + _lerp(z[:, 22], -3.0, 3.0) + sp * 3.0
    p["mouth_x"] = 48.0 + sy * 4.0
    p["mouth_a"] = _lerp(z[:, 23], 10.5, 16.5) * (1 + 0.18 * smile)
    p["lip_b"] = _lerp(z[:, 24], 2.0, 4.2)
    p["lip"] = p["skin"] * np.array([0.78, 0.58, 0.58]) + (z[:, 25:26] - 0.5) * 20
    p["teeth"] = np.clip((smile - 0.55) * 2.5, 0, 1)
    # ---- ears
    p["ear_y"] = _lerp(z[:, 26], 56.0, 66.0)
    p["ear_a"] = _lerp(z[:, 27], 4.0, 6.5)
    p["ear_b"] = _lerp(z[:, 28], 8.0, 12.0)
    # ---- hair: style 0 bald, 1 short, 2 medium, 3 long, 4 fringe; colour; hairline
    style = np.minimum((z[:, 29] * 5).astype(np.int64), 4)
    p["style"] = style
    grey = np.where(z[:, 30] < 0.12, 6 + z[:, 31] * 1.99, z[:, 31] * 5.99)
    p["hair"] = _palette(_HAIR, grey / 7.0) + (z[:, 32:35] - 0.5) * 16
    p["hairline"] = np.select([style == 0, style == 4], [_lerp(z[:, 33], 2.0, 12.0), _lerp(z[:, 33], 30.0, 38.0)],
                              _lerp(z[:, 33], 18.0, 28.0)) + n[:, 4] * 1.0 * d
    p["hair_curve"] = np.where(style == 0, 0.06, _lerp(z[:, 34], 0.004, 0.02))
    p["hair_thick"] = np.select([style == 0, style == 1], [1.0, 3.0], 6.0) + z[:, 35] * 3
    p["long"] = (style == 3).astype(np.float64)
    # ---- facial hair: 0 none, 1 stubble, 2 mustache, 3 beard, 4 goatee (more often none)
    fh = np.minimum((np.maximum(z[:, 36] - 0.45, 0) / 0.55 * 5).astype(np.int64), 4)
    p["stubble"] = np.where(fh == 1, 0.22, np.where(fh == 3, 0.9, 0.0))
    p["mustache"] = np.where((fh == 2) | (fh == 3) | (fh == 4), 0.9, 0.0)
    p["goatee"] = np.where((fh == 4) | (fh == 3), 0.9, 0.0)
    # ---- marks: a mole somewhere on the cheeks
    p["mole"] = (z[:, 37] < 0.4).astype(np.float64)
    p["mole_x"] = 48.0 + _lerp(z[:, 38], -22.0, 22.0)
    p["mole_y"] = _lerp(z[:, 39], 60.0, 86.0)
    # ---- accessories (identity propensity x image draw)
    p_glasses = np.where(z[:, 40] < 0.25, 0.75, 0.06) * min(1.0, d)
    p["glasses"] = (u[:, 20] < p_glasses).astype(np.float64)
    p["sunglasses"] = p["glasses"] * (u[:, 21] < 0.15)
    metal = (z[:, 42] < 0.3)[:, None]
    p["frame"] = np.where(metal, 150.0 + 60 * z[:, 41:42], _palette(_HAIR[:3], z[:, 41]))
    p["hat"] = (u[:, 22] < 0.10 * d).astype(np.float64)
    p["hat_y"] = _lerp(u[:, 23], 14.0, 28.0)
    p["hat_col"] = u[:, 24:27] * 200 + 20
    # ---- occlusion: an object (hand, phone, scarf) over part of the face
    p["occ"] = (u[:, 30] < 0.12 * d).astype(np.float64)
    p["occ_x"] = _lerp(u[:, 32], 10.0, 86.0)
    p["occ_y"] = np.where(u[:, 31] < 0.6, _lerp(u[:, 33], 85.0, 110.0), _lerp(u[:, 33], 20.0, 100.0))
    p["occ_a"] = _lerp(u[:, 34], 8.0, 22.0)
    p["occ_b"] = _lerp(u[:, 35], 6.0, 16.0)
    p["occ_col"] = np.where(u[:, 36:37] < 0.5, p["skin"] * 0.9, u[:, 37:40] * 220 + 20)
    # ---- background
    p["bg"] = (u[:, 44:47] * 0.45 + u[:, 43:44] * 0.55) * 230 + 12  # mostly muted, some colour
    p["bg_gx"] = (u[:, 47:50] - 0.5) * 80 * d
    p["bg_gy"] = (u[:, 50:53] - 0.5) * 80 * d
    # ---- illumination: direction, strength, intensity, colour cast, side shading
    ang = u[:, 53] * 2 * np.pi
    strength = _lerp(u[:, 54], 0.0, 0.55) * min(d, 1.8)
    p["light_x"] = np.cos(ang) * strength
    p["light_y"] = np.sin(ang) * strength * 0.6
    p["intensity"] = np.clip(1.0 + n[:, 5] * 0.18 * d, 0.45, 1.6)
    p["cast"] = np.clip(1.0 + n[:, 6:9] * 0.07 * d, 0.7, 1.3)
    p["side_shade"] = _lerp(u[:, 55], 0.0, 0.45) * min(d, 1.5)
    # ---- imaging: alignment jitter of a 5-point detector, blur, noise, JPEG
    p["jit_rot"] = n[:, 9] * 3.0 * d
    p["jit_scale"] = 1.0 + n[:, 10] * 0.035 * d
    p["jit_tx"] = n[:, 11] * 1.6 * d
    p["jit_ty"] = n[:, 12] * 1.6 * d
    p["blur"] = np.where(u[:, 40] < 0.5 * min(d, 1.5), _lerp(u[:, 56], 0.3, 1.4) * d, 0.0)
    p["noise"] = _lerp(u[:, 57], 1.0, 8.0) * d
    p["noise_ox"] = (u[:, 58] * 150).astype(np.int64)
    p["noise_oy"] = (u[:, 59] * 130).astype(np.int64)
    p["jpeg"] = np.where(u[:, 41] < 0.35 * min(d, 2.0), _lerp(u[:, 60], 25, 70), 0).astype(np.int64)
    return p


# ----------------------------------------------------------------------------------------------------------
# Pixel compositing: soft masks on a float32 canvas (B, 3, 112, 96). Each mask covers its own window of each
# image. Compiled kernels (numba without fast-math: IEEE float32 operations in a fixed order, no fused
# multiply-add) compute the masks and apply them; parameters arrive in float64 and are rounded to float32 once.
# ----------------------------------------------------------------------------------------------------------

H, W = TEMPLATE_SIZE
_XS = np.arange(W, dtype=np.float32) + np.float32(0.5)   # pixel centres
_YS = np.arange(H, dtype=np.float32) + np.float32(0.5)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _per_image(a, n: int) -> np.ndarray:
    """A float64 vector (n,), one value per image, from a scalar or an array of n values."""
    if np.ndim(a) == 0:
        return np.full(n, a, np.float64)
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"need one value per image ({n}), got shape {a.shape}")
    return a


def _kernel(fn):
    """``fn`` compiled by numba without fast-math, cached on disk where numba finds a writable cache folder
    (next to this file, else ``NUMBA_CACHE_DIR`` or the user's cache), else compiled anew in each process."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)


@_kernel
def _ellipse_windows(cx, cy, a, b, soft, curve, has_curve):
    """Per-image windows (y0, x0, hs, ws) that hold the whole support of each ellipse's soft mask."""
    n = len(cx)
    y0, x0 = np.empty(n, np.int64), np.empty(n, np.int64)
    hs, ws = np.empty(n, np.int64), np.empty(n, np.int64)
    for k in range(n):
        # the mask is > 0 out to grow = 1 + 0.5 / sharp times each semi-axis (sharp = min(a, b) / soft)
        ak, bk = max(a[k], 0.3), max(b[k], 0.3)
        grow = 1.0 + 0.5 * soft / min(ak, bk)
        rx, ry = ak * grow + 1.0, bk * grow + 1.0
        ext = abs(curve[k]) * rx * rx if has_curve else 0.0
        y0[k] = max(0, int(np.floor(cy[k] - ry - ext)) - 1)
        hs[k] = max(min(H, int(np.ceil(cy[k] + ry + ext)) + 2) - y0[k], 0)
        x0[k] = max(0, int(np.floor(cx[k] - rx)) - 1)
        ws[k] = max(min(W, int(np.ceil(cx[k] + rx)) + 2) - x0[k], 0)
    return y0, x0, hs, ws


@_kernel
def _ellipse_kernel(cx, cy, a, b, soft, curve, taper, has_curve, has_taper, y0, x0, hs, ws):
    """Soft masks (n, max hs, max ws) of n ellipses on each image's window (y0, x0, hs, ws), zero padded."""
    n = len(cx)
    shape = (n, hs.max() if n else 0, ws.max() if n else 0)
    out = np.zeros(shape, np.float32)
    zero, one, half = np.float32(0.0), np.float32(1.0), np.float32(0.5)
    for k in range(n):
        ak, bk = max(a[k], 0.3), max(b[k], 0.3)
        tcx, tcy = np.float32(cx[k]), np.float32(cy[k])
        inv_a2, inv_b = np.float32(1.0 / (ak * ak)), np.float32(1.0 / bk)
        tcurve, ttaper = np.float32(curve[k]), np.float32(taper[k])
        sharp = min(ak, bk) / soft
        neg_k, offset = np.float32(-sharp), np.float32(0.5 + sharp)
        for i in range(hs[k]):
            y = np.float32(y0[k] + i) + half
            dy = (y - tcy) * inv_b
            wy = one
            if has_taper:
                dyr = max(dy, zero)
                # width factor in [0.1, 1], so the support stays within a * grow (the window's extent)
                wy = min(max(one - ttaper * dyr * dyr, np.float32(0.1)), one)
            for j in range(ws[k]):
                dx = (np.float32(x0[k] + j) + half) - tcx
                dx2 = dx * dx * inv_a2
                if has_curve:
                    yy = (y - (tcy + tcurve * (dx * dx))) * inv_b
                    q = yy * yy
                else:
                    q = dy * dy
                q = q + dx2 / (wy * wy) if has_taper else q + dx2
                out[k, i, j] = min(max(np.sqrt(q) * neg_k + offset, zero), one)
    return out


@_kernel
def _paint_kernel(img, rows, mask, y0, x0, hs, ws, color, alpha, has_alpha):
    """img[rows[k]] += (color[k] - img[rows[k]]) * mask[k] (times alpha[k]) inside each image's window."""
    for k in range(mask.shape[0]):
        a = np.float32(alpha[k])
        for ch in range(3):
            plane, c = img[rows[k], ch], np.float32(color[k, ch])
            for i in range(hs[k]):
                line, m = plane[y0[k] + i, x0[k]:x0[k] + ws[k]], mask[k, i]
                for j in range(ws[k]):
                    mj = m[j] * a if has_alpha else m[j]
                    line[j] = line[j] + (c - line[j]) * mj


@_kernel
def _shade_kernel(img, rows, mask, y0, x0, hs, ws, amount):
    """img[rows[k]] *= 1 - amount[k] * mask[k] inside each image's window."""
    for k in range(mask.shape[0]):
        neg = np.float32(-amount[k])
        for ch in range(3):
            plane = img[rows[k], ch]
            for i in range(hs[k]):
                line, m = plane[y0[k] + i, x0[k]:x0[k] + ws[k]], mask[k, i]
                for j in range(ws[k]):
                    line[j] = line[j] * (m[j] * neg + np.float32(1.0))


@_kernel
def _light_kernel(img, light_x, light_y, intensity, cast, out):
    """Illumination, then 8 bits: out (n, H, W * 3) = rint(clamp(img * gain * cast, 0, 255)) with channels
    interleaved, where the gain is (1 + a directional gradient) times the intensity."""
    one, half = np.float32(1.0), np.float32(0.5)
    hy, hx = np.float32(H / 2), np.float32(W / 2)
    ramp_x = np.empty(W, np.float32)
    for j in range(W):
        ramp_x[j] = ((np.float32(j) + half) - hx) / hx
    gain, lit = np.empty(W, np.float32), np.empty(W, np.float32)
    for k in range(img.shape[0]):
        ly, lx = np.float32(-light_y[k]), np.float32(light_x[k] * 0.8)
        inten = np.float32(intensity[k])
        for i in range(H):
            gy = ly * (((np.float32(i) + half) - hy) / hy)
            for j in range(W):
                gain[j] = ((gy + lx * ramp_x[j]) + one) * inten
            row = out[k, i]
            for ch in range(3):
                c, line = np.float32(cast[k, ch]), img[k, ch, i]
                for j in range(W):
                    lit[j] = np.rint(min(max(line[j] * gain[j] * c, np.float32(0.0)), np.float32(255.0)))
                for j in range(W):
                    row[3 * j + ch] = np.uint8(lit[j])


@_kernel
def _noise_kernel(img, bank, oy, ox, sigma):
    """Sensor noise in place: img = clamp(img + rint(sigma * bank crop at (oy, ox)), 0, 255); img uint8
    (n, H, W * C) and bank float32 (256, 256 * C), rows with channels interleaved."""
    ch = bank.shape[1] // 256
    for k in range(img.shape[0]):
        s = np.float32(sigma[k])
        for i in range(img.shape[1]):
            noise, line = bank[oy[k] + i, ch * ox[k]:ch * ox[k] + img.shape[2]], img[k, i]
            for t in range(img.shape[2]):
                v = np.rint(noise[t] * s) + np.float32(line[t])
                line[t] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


@dataclass(frozen=True)
class _Mask:
    """Soft masks (B, h, w) float32, mask k covering rows y0[k] .. y0[k] + hs[k], columns x0[k] .. x0[k] + ws[k]
    of image k (zero padded to a common shape)."""

    data: np.ndarray
    y0: np.ndarray
    x0: np.ndarray
    hs: np.ndarray
    ws: np.ndarray

    def like(self, data: np.ndarray) -> "_Mask":
        """A mask over the same windows with other values (for products and differences of masks)."""
        return _Mask(np.ascontiguousarray(data, dtype=np.float32), self.y0, self.x0, self.hs, self.ws)


class _Canvas:
    """A float32 canvas (N, 3, 112, 96) (numpy); ``rows`` (int64 indices) restricts drawing to B of its images."""

    def __init__(self, img: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.img = img
        self.rows = np.arange(len(img), dtype=np.int64) if rows is None else rows
        self.B = len(self.rows)

    def subset(self, idx: np.ndarray) -> "_Canvas":
        """The canvas of images ``idx`` (of this canvas's B); drawing on it changes them here."""
        return _Canvas(self.img, self.rows[np.asarray(idx, np.int64)])

    def ellipse(self, cx, cy, a, b, soft=1.0, curve=None, taper=None, win=None) -> _Mask:
        """Soft mask of the ellipse ((x-cx)/a)^2 + ((y - cy - curve (x-cx)^2)/b)^2 <= 1: 1 inside, 0 beyond a
        soft edge about ``soft`` pixels wide. ``taper`` narrows the lower half (a jaw): half-width
        a max(1 - taper ((y-cy)/b)^2, 0.1) below the centre. ``win``: the windows of another mask, or (y0, y1, x0, x1)
        for every image; by default each image's window covers its mask's support (so pixels never depend on
        which other images share the batch)."""
        n = self.B
        cx, cy, a, b = _per_image(cx, n), _per_image(cy, n), _per_image(a, n), _per_image(b, n)
        curve_v = _per_image(0.0 if curve is None else curve, n)
        if isinstance(win, _Mask):
            self._check(win)
            y0, x0, hs, ws = win.y0, win.x0, win.hs, win.ws
        elif win is not None:
            wy0, wy1, wx0, wx1 = win
            if not (0 <= wy0 <= wy1 <= H and 0 <= wx0 <= wx1 <= W):
                raise ValueError(f"win={win}: need 0 <= y0 <= y1 <= {H} and 0 <= x0 <= x1 <= {W}")
            y0, x0 = np.full(n, wy0, np.int64), np.full(n, wx0, np.int64)
            hs, ws = np.full(n, wy1 - wy0, np.int64), np.full(n, wx1 - wx0, np.int64)
        else:
            y0, x0, hs, ws = _ellipse_windows(cx, cy, a, b, float(soft), curve_v, curve is not None)
        data = _ellipse_kernel(cx, cy, a, b, float(soft), curve_v, _per_image(0.0 if taper is None else taper, n),
                               curve is not None, taper is not None, y0, x0, hs, ws)
        return _Mask(data, y0, x0, hs, ws)

    def _check(self, mask: _Mask) -> None:
        """The kernels do not check bounds: a mask must come from a canvas of this canvas's images."""
        if len(mask.y0) != self.B:
            raise ValueError(f"a mask of {len(mask.y0)} images drawn on a canvas of {self.B}")

    def paint(self, mask: _Mask, color, alpha=None) -> None:
        """Composite a colour (B, 3) through a mask with optional per-image opacity alpha (B,)."""
        self._check(mask)
        color = np.ascontiguousarray(np.broadcast_to(color, (self.B, 3)), dtype=np.float64)
        _paint_kernel(self.img, self.rows, mask.data, mask.y0, mask.x0, mask.hs, mask.ws, color,
                      _per_image(0.0 if alpha is None else alpha, self.B), alpha is not None)

    def shade(self, mask: _Mask, amount) -> None:
        """Darken (amount > 0) or lighten (< 0) through a mask: multiply by 1 - amount * mask."""
        self._check(mask)
        _shade_kernel(self.img, self.rows, mask.data, mask.y0, mask.x0, mask.hs, mask.ws,
                      _per_image(amount, self.B))

    def draw(self, color, alpha=None, **kw) -> _Mask:
        m = self.ellipse(**kw)
        self.paint(m, color, alpha)
        return m


def _subset(p: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in p.items()}


def _draw_hat(c: _Canvas, p: dict[str, np.ndarray]) -> None:
    cx = p["head_cx"]
    c.draw(p["hat_col"], cx=cx, cy=p["hat_y"] - 10, a=p["head_ax"] + 5, b=np.full_like(cx, 26.0), soft=1.0)
    c.draw(p["hat_col"] * 0.75, cx=cx, cy=p["hat_y"] + 1, a=p["head_ax"] + 11, b=np.full_like(cx, 3.0))


def _draw_glasses(c: _Canvas, p: dict[str, np.ndarray]) -> None:
    ga, gb = p["eye_a"] + 3.5, p["eye_b"] + 4.5
    for ex in (p["eye_xl"], p["eye_xr"]):
        outer = c.ellipse(cx=ex, cy=p["eye_y"] + 0.5, a=ga, b=gb, soft=0.8)
        inner = c.ellipse(cx=ex, cy=p["eye_y"] + 0.5, a=ga - 1.3, b=gb - 1.3, soft=0.8, win=outer)
        c.paint(inner, np.full((c.B, 3), 20.0), 0.12 + 0.8 * p["sunglasses"])
        c.paint(outer.like(outer.data - inner.data), p["frame"])
    mid = (p["eye_xl"] + p["eye_xr"]) / 2
    c.draw(p["frame"], cx=mid, cy=p["eye_y"] - 1.0, a=(p["eye_xr"] - p["eye_xl"]) / 2 - ga + 1.5,
           b=np.full_like(mid, 0.8), soft=0.8, curve=np.full_like(mid, 0.02))


def _draw_blush(c: _Canvas, p: dict[str, np.ndarray]) -> None:
    for ex in (p["eye_xl"], p["eye_xr"]):
        c.draw(np.array([[200.0, 90, 90]]).repeat(c.B, 0), p["blush"], cx=ex, cy=p["eye_y"] + 20,
               a=np.full(c.B, 8.0), b=np.full(c.B, 6.0), soft=5.0)


def _draw_beard(c: _Canvas, p: dict[str, np.ndarray]) -> None:
    """Stubble or beard: the head's lower part below a line that rises towards the sideburns."""
    hx, beard_top = p["head_cx"], p["mouth_y"] - 10
    y0 = int(max(0, np.floor(beard_top.min() - 0.012 * 50**2 - 2)))
    bm = c.ellipse(cx=hx, cy=p["head_cy"], a=p["head_ax"], b=p["head_ay"], soft=1.2, taper=p["jaw"],
                   win=(y0, H, 0, W))
    dxb = _XS[None, :] - _f32(hx)[:, None]
    top = _f32(beard_top)[:, None] - 0.012 * dxb * dxb
    below = np.clip((_YS[None, y0:, None] - top[:, None, :]) / 3.0, 0.0, 1.0)
    c.paint(bm.like(bm.data * below), p["hair"] * 0.9, p["stubble"])


def _draw_occluder(c: _Canvas, p: dict[str, np.ndarray]) -> None:
    c.draw(p["occ_col"], cx=p["occ_x"], cy=p["occ_y"], a=p["occ_a"], b=p["occ_b"], soft=1.5)


def _optional(c: _Canvas, p: dict[str, np.ndarray], flag: str, fn) -> None:
    """Draw ``fn`` only on the images whose ``flag`` is set (work proportional to how many have it and to the
    area it covers)."""
    idx = np.flatnonzero(p[flag] > 0)
    if len(idx) == 0:
        return
    fn(c.subset(idx), _subset(p, idx))


def _render_aligned(p: dict[str, np.ndarray]) -> np.ndarray:
    """The aligned, lit face before imaging effects: uint8 (B, 112, 96, 3)."""
    if len(p["bg"]) == 0:
        return np.zeros((0, H, W, 3), np.uint8)
    # background colour plus a linear gradient in y, then in x
    gy = _f32(p["bg_gy"])[:, :, None, None] * ((_YS - H / 2) / H)[None, None, :, None]
    gx = _f32(p["bg_gx"])[:, :, None, None] * ((_XS - W / 2) / W)[None, None, None, :]
    c = _Canvas((_f32(p["bg"])[:, :, None, None] + gy) + gx)
    B = c.B
    hx, hy, ha, hb = p["head_cx"], p["head_cy"], p["head_ax"], p["head_ay"]
    skin = p["skin"]
    # long hair behind the head, neck
    _optional(c, p, "long", lambda c, p: c.draw(p["hair"], cx=p["head_cx"], cy=p["head_cy"] + 22,
                                                a=p["head_ax"] + 9, b=p["head_ay"] + 20, soft=2.0))
    c.draw(skin * 0.82, cx=hx, cy=hy + hb + 4, a=ha * 0.62, b=np.full(B, 22.0), soft=2.0)
    # ears at the head's edge
    wy = ha * np.sqrt(np.clip(1 - ((p["ear_y"] - hy) / hb) ** 2, 0.2, 1)) * (1 - p["jaw"] * np.clip(
        (p["ear_y"] - hy) / hb, 0, 1) ** 2)
    for side in (-1, 1):
        c.draw(skin * 0.88, cx=hx + side * (wy - 1.0), cy=p["ear_y"], a=p["ear_a"], b=p["ear_b"], soft=1.2)
    # head, relief shading away from the light
    head = c.draw(skin, cx=hx, cy=hy, a=ha, b=hb, soft=1.2, taper=p["jaw"])
    lit = c.ellipse(cx=hx + p["light_x"] * 14, cy=hy - p["light_y"] * 14, a=ha * 0.95, b=hb * 0.98,
                    soft=12.0, taper=p["jaw"], win=head)
    c.shade(head.like(head.data * (1.0 - lit.data)), p["side_shade"])
    # cheeks, mole, stubble/beard
    _optional(c, p, "blush", _draw_blush)
    _optional(c, p, "stubble", _draw_beard)
    _optional(c, p, "mole", lambda c, p: c.draw(np.full((c.B, 3), 40.0), cx=p["mole_x"], cy=p["mole_y"],
                                                a=np.full(c.B, 1.1), b=np.full(c.B, 1.1), soft=0.8))
    # hair on top, inside an ellipse slightly larger than the head and above the hairline
    t = p["hair_thick"]
    hm = c.ellipse(cx=hx, cy=hy, a=ha + t, b=hb + t, soft=1.5, win=(0, H, 0, W))
    dxh = _XS[None, :] - _f32(hx)[:, None]
    hl = _f32(p["hairline"])[:, None] + _f32(p["hair_curve"])[:, None] * dxh * dxh
    limit = np.clip((hl[:, None, :] - _YS[None, :, None]) / 2.0 + 0.5, 0.0, 1.0)
    c.paint(hm.like(hm.data * limit), p["hair"])
    # brows
    for ex, sgn in ((p["eye_xl"], -1), (p["eye_xr"], 1)):
        c.draw(p["hair"] * 0.75, 0.9, cx=ex + sgn * 1.0, cy=p["brow_y"], a=p["brow_a"], b=p["brow_b"],
               soft=1.0, curve=p["brow_arch"])
    # eyes: socket shadow, sclera, iris, pupil, upper lid
    for ex, sgn in ((p["eye_xl"], -1), (p["eye_xr"], 1)):
        ey, ea = p["eye_y"], p["eye_a"] * (1 - 0.25 * sgn * np.sin(np.radians(p["yaw"])))
        eb = p["eye_b"] * np.maximum(p["eye_open"], 0.05)
        c.shade(c.ellipse(cx=ex, cy=ey - 1, a=ea + 3, b=p["eye_b"] + 3.5, soft=3.0), np.full(B, 0.18))
        sclera = c.ellipse(cx=ex, cy=ey, a=ea, b=eb, soft=0.8, curve=p["eye_slant"] * sgn * 0.3)
        c.paint(sclera, np.full((B, 3), 236.0), np.minimum(p["eye_open"], 1.0))
        iris = c.ellipse(cx=ex + p["gaze"], cy=ey, a=p["iris_r"], b=p["iris_r"], soft=0.8, win=sclera)
        c.paint(sclera.like(iris.data * sclera.data), p["iris"])
        pupil = c.ellipse(cx=ex + p["gaze"], cy=ey, a=p["iris_r"] * 0.45, b=p["iris_r"] * 0.45, soft=0.7,
                          win=sclera)
        c.paint(sclera.like(pupil.data * sclera.data), np.full((B, 3), 12.0))
        c.draw(np.full((B, 3), 30.0), 0.85, cx=ex, cy=ey - eb * 0.9, a=ea * 1.02, b=np.full(B, 0.8), soft=0.8,
               curve=0.35 / ea)
    # nose: bridge shadow on the dark side, shadow under the tip, nostrils
    nx, ny, nw = p["nose_x"], p["nose_y"], p["nose_w"]
    side = np.where(p["light_x"] >= 0, -1.0, 1.0)
    c.draw(skin * 0.7, 0.35, cx=nx + side * nw * 0.55, cy=(ny + p["eye_y"]) / 2 + 1, a=np.full(B, 1.6),
           b=(ny - p["eye_y"]) / 2, soft=1.5)
    c.draw(skin * 0.62, 0.5, cx=nx, cy=ny + 1.6, a=nw * 1.05, b=np.full(B, 2.2), soft=1.5)
    for sgn in (-1, 1):
        c.draw(skin * 0.35, 0.8, cx=nx + sgn * nw * 0.45, cy=ny + 1.0, a=nw * 0.28, b=np.full(B, 1.1), soft=0.8)
    c.draw(np.minimum(skin * 1.12 + 10, 255), 0.35, cx=nx, cy=ny - 2.5, a=nw * 0.45, b=np.full(B, 2.4), soft=2.0)
    # mustache, goatee, mouth (lips, opening, teeth)
    mx, my, ma = p["mouth_x"], p["mouth_y"], p["mouth_a"]
    curve = -p["smile"] * 0.9 / ma + 0.004
    p["curve"] = curve
    _optional(c, p, "mustache", lambda c, p: c.draw(
        p["hair"] * 0.8, 0.9, cx=p["mouth_x"], cy=p["mouth_y"] - p["lip_b"] - 3.0, a=p["mouth_a"] * 0.95,
        b=np.full(c.B, 2.3), soft=1.0, curve=p["curve"] * 0.6 + 0.006))
    _optional(c, p, "goatee", lambda c, p: c.draw(
        p["hair"] * 0.8, 0.9, cx=p["mouth_x"], cy=p["mouth_y"] + p["lip_b"] + 7.5, a=p["mouth_a"] * 0.5,
        b=np.full(c.B, 4.5), soft=1.5))
    c.draw(p["lip"], cx=mx, cy=my, a=ma, b=p["lip_b"] * (1 + 0.4 * p["teeth"]), soft=1.0, curve=curve)
    gap = 0.55 + 1.8 * p["teeth"]
    c.draw(np.full((B, 3), 40.0) * (1 - p["teeth"][:, None]) + 225 * p["teeth"][:, None], cx=mx, cy=my,
           a=ma * 0.92, b=gap, soft=0.7, curve=curve)
    # accessories and occlusion (only the images that have them)
    _optional(c, p, "glasses", _draw_glasses)
    _optional(c, p, "hat", _draw_hat)
    _optional(c, p, "occ", _draw_occluder)
    # illumination: directional gradient, intensity, colour cast; then 8 bits
    out = np.empty((B, H, W, 3), np.uint8)
    _light_kernel(c.img, _per_image(p["light_x"], B), _per_image(p["light_y"], B), _per_image(p["intensity"], B),
                  np.ascontiguousarray(p["cast"], dtype=np.float64), out.reshape(B, H, W * 3))
    return out


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed float32 N(0, 1) texture (256, 256, 3); images crop it at their own offsets."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0x5EED, 112, 96])))
    return rng.standard_normal((256, 256, 3)).astype(np.float32)


def _imaging(img: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Camera then detector: blur, sensor noise, JPEG, then the alignment warp of an imperfect 5-point
    detector (a similarity transform); uint8 (B, 112, 96, 3) in and out."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # tiny images: a thread pool costs more than it saves
    try:
        for i in np.flatnonzero(p["blur"] > 0):
            img[i] = cv2.GaussianBlur(img[i], (0, 0), float(p["blur"][i]), borderType=cv2.BORDER_REPLICATE)
        _noise_kernel(img.reshape(len(img), H, W * 3), _noise_bank().reshape(256, 256 * 3), p["noise_oy"],
                      p["noise_ox"], _per_image(p["noise"], len(img)))
        for i in np.flatnonzero(p["jpeg"] > 0):
            ok, buf = cv2.imencode(".jpg", img[i], [cv2.IMWRITE_JPEG_QUALITY, int(p["jpeg"][i])])
            img[i] = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        centre = (48.0, 62.0)
        for i in range(len(img)):
            m = cv2.getRotationMatrix2D(centre, float(p["jit_rot"][i]), float(p["jit_scale"][i]))
            m[0, 2] += float(p["jit_tx"][i])
            m[1, 2] += float(p["jit_ty"][i])
            img[i] = cv2.warpAffine(img[i], m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    finally:
        cv2.setNumThreads(threads)
    return img


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Exact integer block average from 112x96 to (112/f, 96/f), f in {1, 2, 4}."""
    f = H // size[0]
    if f == 1:
        return img
    b, h, w, ch = img.shape
    s = img.reshape(b, h // f, f, w // f, f, ch).astype(np.uint32).sum(axis=(2, 4))
    return ((s + (f * f) // 2) // (f * f)).astype(np.uint8)


def _grey(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in integer arithmetic, keeping a channel axis of 1."""
    s = img.astype(np.uint32) @ np.array([299, 587, 114], np.uint32)
    return ((s + 500) // 1000).astype(np.uint8)[..., None]


_POOL_CHUNK = 256   # images per task of the process pool
_POOL_MIN = 1024    # a batch this large or larger is spread over the pool (smaller ones: starting it costs more)


@functools.lru_cache(maxsize=None)
def _executor(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, started on first use and kept for later batches."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def free_cpus() -> int:
    """CPUs this process may use (``os.sched_getaffinity``) less the 1-minute load average of the others
    (``os.getloadavg``), at least 1: on a busy machine more workers than free CPUs render slower than one
    process (0.64x on a loaded 2-core machine, issue 18)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0.0
    return max(1, min(allowed, int(allowed - busy + 0.5)))


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        return free_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: use a positive integer, or None for the CPUs free now")
    return workers


def _render_into(fn: Callable[..., np.ndarray], args: tuple, path: str, shape: tuple[int, ...], start: int) -> None:
    """Pool task: write ``fn(*args)`` into rows ``start ..`` of the uint8 array ``shape`` mapped from ``path``."""
    img = fn(*args)
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as m:
        out = np.frombuffer(m, np.uint8).reshape(shape)
        out[start:start + len(img)] = img
        del out


def _pooled(fn: Callable[..., np.ndarray], tasks: Sequence[tuple[int, tuple]], shape: tuple[int, ...],
            workers: int) -> np.ndarray:
    """uint8 ``shape`` whose rows from ``start`` on are ``fn(*args)``, for each task (start, args), computed by a
    pool of ``workers`` processes. They write into a shared file mapping (in /dev/shm where there is one) that
    becomes the result, unlinked at once and unmapped with the last array that uses it: no image is pickled or
    copied."""
    ex = _executor(workers)
    fd, path = tempfile.mkstemp(prefix="sphereface-render-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        os.ftruncate(fd, max(1, int(np.prod(shape))))
        m = mmap.mmap(fd, 0)
        for fut in [ex.submit(_render_into, fn, args, path, shape, start) for start, args in tasks]:
            fut.result()
    except BrokenProcessPool as e:
        _executor.cache_clear()
        raise RuntimeError(f"render: a worker of the {workers}-process pool died (see its traceback above). Spawned "
                           "workers import the main module: a script must keep its work under `if __name__ == "
                           "'__main__':`; or pass workers=1 to render in this process") from e
    finally:
        os.close(fd)
        os.unlink(path)
    return np.frombuffer(m, np.uint8, count=int(np.prod(shape))).reshape(shape)


def _use_pool(n: int, workers: int, shape: tuple[int, ...]) -> bool:
    """Whether to render on the pool: several workers, a large batch, not inside a multiprocessing child (no
    pools in pools), and room in /dev/shm where Linux keeps shared memory (a container may give it 64 MB)."""
    if workers < 2 or n < _POOL_MIN or multiprocessing.parent_process() is not None:
        return False
    return not os.path.isdir("/dev/shm") or shutil.disk_usage("/dev/shm").free > 2 * int(np.prod(shape))


def render(latents: np.ndarray, nuisances: np.ndarray, *, size: tuple[int, int] = TEMPLATE_SIZE,
           grey: bool = False, difficulty: float = 1.0, chunk: int = 64, workers: int | None = None) -> np.ndarray:
    """Render faces from identity latents (B, _N_ID) and nuisance vectors (B, K): uint8 (B, h, w, C).

    Batches of ``_POOL_MIN`` images or more are split into tasks of ``_POOL_CHUNK`` images rendered by
    ``workers`` spawned processes (default :func:`free_cpus`, the CPUs not busy now; 1 renders here). The pixels depend on neither
    ``chunk`` nor ``workers`` (each image's pixels are computed from its own parameters with elementwise
    float32 operations only).
    """
    if tuple(size) not in OUTPUT_SIZES:
        raise ValueError(f"size={tuple(size)} is not supported: use one of {list(OUTPUT_SIZES)}")
    Difficulty(difficulty)
    latents, nuisances = np.asarray(latents, np.float64), np.asarray(nuisances, np.float64)
    if latents.ndim != 2 or nuisances.shape != (len(latents), _N_IMG_U + _N_IMG_N):
        raise ValueError(f"need latents (B, {_N_ID}) and nuisances (B, {_N_IMG_U + _N_IMG_N}), "
                         f"got {latents.shape} and {nuisances.shape}")
    workers = _resolve_workers(workers)
    if _use_pool(len(latents), workers, (len(latents), *size, 1 if grey else 3)):
        task = functools.partial(render, size=size, grey=grey, difficulty=difficulty, chunk=chunk, workers=1)
        return _pooled(task, [(s, (latents[s:s + _POOL_CHUNK], nuisances[s:s + _POOL_CHUNK]))
                              for s in range(0, len(latents), _POOL_CHUNK)],
                       (len(latents), *size, 1 if grey else 3), workers)
    out = np.empty((len(latents), *size, 1 if grey else 3), np.uint8)
    for s in range(0, len(latents), chunk):
        p = _params(latents[s:s + chunk], nuisances[s:s + chunk], difficulty)
        img = _resize(_imaging(_render_aligned(p), p), size)
        out[s:s + chunk] = _grey(img) if grey else img
    return out


def render_images(seed: int, identities, indices, *, workers: int | None = None, **kw) -> np.ndarray:
    """Still images: image ``indices[i]`` of identity ``identities[i]`` under ``seed`` (see :func:`render`).

    With a pool (``workers``, large batches, as in :func:`render`) each worker also draws its images' random
    streams.
    """
    identities, indices = np.asarray(identities, np.int64), np.asarray(indices, np.int64)
    if identities.shape != indices.shape or identities.ndim != 1:
        raise ValueError(f"identities and indices must be 1-D of equal length, got {identities.shape} "
                         f"and {indices.shape}")
    workers = _resolve_workers(workers)
    shape = (len(identities), *tuple(kw.get("size", TEMPLATE_SIZE)), 1 if kw.get("grey", False) else 3)
    if _use_pool(len(identities), workers, shape):
        task = functools.partial(render_images, workers=1, **kw)
        return _pooled(task, [(s, (seed, identities[s:s + _POOL_CHUNK], indices[s:s + _POOL_CHUNK]))
                              for s in range(0, len(identities), _POOL_CHUNK)], shape, workers)
    z = np.stack([identity_latent(seed, int(i)) for i in identities]) if len(identities) else np.zeros((0, _N_ID))
    v = (np.stack([image_nuisance(seed, int(i), int(j)) for i, j in zip(identities, indices)])
         if len(identities) else np.zeros((0, _N_IMG_U + _N_IMG_N)))
    return render(z, v, workers=1, **kw)


def render_video(seed: int, identity: int, video: int, num_frames: int, **kw) -> np.ndarray:
    """The frames (num_frames, h, w, C) of one video of ``identity``: nuisance varies smoothly across frames."""
    v = video_nuisance(seed, identity, video, num_frames)
    z = np.repeat(identity_latent(seed, identity)[None], num_frames, 0)
    return render(z, v, **kw)
