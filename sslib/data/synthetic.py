"""A procedurally generated "context" data set for weakly supervised segmentation.

What it looks like
------------------
Square RGB images (``synthetic.image_size``, 256 px by default) showing one to three
objects (``min_objects`` .. ``max_objects``) from six classes, each drawn as a
distinct shape with a distinct surface texture, over a textured background:

========== ================================================ ================== =======
class      shape                                            texture            context
========== ================================================ ================== =======
aeroplane  top view: fuselage, swept wings and tail (cross) metallic shading   sky
boat       side view: hull and one or two triangular sails  horizontal stripes water
car        side view: body, cabin with windows, two wheels  solid, glossy      road
cow        side view: body, head, four legs                 spots              grass
bird       four- to six-pointed star                        speckle noise      sand
sofa       side view: seat, back, two armrests (U shape)    checker (plaid)    indoor
========== ================================================ ================== =======

The six background contexts are textured, never flat: *sky* (blue vertical gradient
with soft clouds), *water* (teal with rolling waves and glints), *road* (grainy asphalt
with dashed and solid lane markings), *grass* (green with vertical blades and patches),
*sand* (beige with wind ripples and grain) and *indoor* (a wooden plank floor). Each
class has one preferred context (the table's last column; :data:`PREFERRED_CONTEXT`).

Objects vary in colour, size (``scale_range``, a fraction of the image side), rotation
(a full turn for aeroplanes and birds, about +-20 degrees plus a mirror flip for the
others) and aspect ratio (0.75 to 1.33). Colour ranges overlap on purpose: cars and
sofas take any hue, aeroplanes are grey or white like clouds and asphalt, birds are
sand-coloured browns and greys, cows brown like the wooden floor; each image also gets
a small brightness change, per-pixel noise and JPEG compression. Objects are drawn in
order, later ones over earlier ones (about 40 % of later objects are placed overlapping
an earlier one), and the mask shows only what is visible.

The context correlation
-----------------------
Each object is shown in its class's preferred context with probability
``context_prob`` (0.85 by default) and otherwise in a random other context, so a
classifier trained on image-level labels can score well by recognising the background
(sky => aeroplane), and its class activation maps then spill into that background:
the over-activation that SSC constrains. The mismatched minority keeps the context from
being a sufficient cue.

An image has at most two background regions, separated by a slightly tilted, wavy
horizon (sky, when present, is always on top). How the background is chosen when
objects want different contexts: every object first draws its wanted context (its
preferred one with probability ``context_prob``, else a random other one); the first
two distinct wanted contexts, in object order, become the image's regions. An object
whose wanted context is neither of them is assigned one of the two regions at random
and its *class* is redrawn to keep its draw: a class that prefers that region if the
object was to be in its preferred context, any other class otherwise. So the share of
objects in their preferred context equals ``context_prob`` in expectation (all of them
at 1.0, none at 0.0), and classes stay uniform. Every object is placed with its centre
in its region and most of its area inside it; its recorded context is the region
holding the majority of its pixels. An image whose objects all share one context is
split, with probability :data:`DISTRACTOR_PROB`, into that context and a smaller
"distractor" region (a quarter to a third of the image) of a context no object in the
image prefers (a sky above a grass field with only a cow in it).

Masks and files
---------------
Masks follow VOC 2012: 0 background, 1..6 the classes in :data:`CLASSES` order, and 255
(ignore) on a one-pixel band along the inside of every object's visible outline
(including between two touching objects). An object left, after occlusion, with fewer
unignored mask pixels than :data:`MIN_VISIBLE_FRAC` of its area or than
:data:`MIN_VISIBLE_PX` (at 128 px, scaled with the image area) is dropped: it is not
drawn in the image and is absent from the mask (meta.json keeps it with
``"visible": false``), so image-level labels read from the masks are always right.
Rendering is vectorised numpy; objects and the horizon are drawn at
:data:`SUPERSAMPLE` times the resolution and box-filtered (anti-aliased edges). Each
image comes from its own generator ``np.random.default_rng([seed, split_index, i])``: the same configuration
gives byte-identical files whatever the order of generation.

Layout under ``out_dir`` (the VOC reader serves it)::

    JPEGImages/train_00000.jpg ...            RGB, JPEG quality synthetic.jpeg_quality
    SegmentationClass/train_00000.png ...     8-bit palette PNG, VOC colour map
    ImageSets/Segmentation/{train,val}.txt    one name per line
    meta.json                                 classes, contexts, preferred context per
                                              class, the configuration (without out_dir),
                                              one record per image; written last
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import SyntheticConfig
from ..io import DataError, remove_stale_temps, write_json, write_text
from ..formats import save_jpeg, save_png, voc_palette

__all__ = [
    "CLASSES", "CONTEXTS", "PREFERRED_CONTEXT", "SHAPES", "TEXTURES", "voc_palette",
    "render_image", "generate", "summarize", "context_stats", "read_meta", "samples", "GENERATOR_VERSION",
]

# --------------------------------------------------------------------------- constants
#: foreground classes, in the order of their mask ids 1..C
CLASSES: tuple[str, ...] = ("aeroplane", "boat", "car", "cow", "bird", "sofa")
#: background contexts; CONTEXTS[k] is the preferred context of CLASSES[k]
CONTEXTS: tuple[str, ...] = ("sky", "water", "road", "grass", "sand", "indoor")
#: class -> the context it is shown in with probability ``context_prob``
PREFERRED_CONTEXT: dict[str, str] = dict(zip(CLASSES, CONTEXTS))
#: shape family of each class (documentation and meta.json)
SHAPES: dict[str, str] = {
    "aeroplane": "cross (fuselage + swept wings + tail, top view)",
    "boat": "polygons (hull trapezoid + triangular sails)",
    "car": "rounded rectangle + cabin + two wheel circles",
    "cow": "ellipses (body, head) + four leg bars",
    "bird": "star (4-6 points)",
    "sofa": "U shape (seat, back, two armrests)",
}
#: texture family of each class
TEXTURES: dict[str, str] = {
    "aeroplane": "metallic shading", "boat": "stripes", "car": "solid glossy",
    "cow": "spots", "bird": "speckle noise", "sofa": "checker",
}
#: bumped whenever the rendering changes (recorded in meta.json)
GENERATOR_VERSION = 1
#: objects and the horizon are drawn at this multiple of image_size and box-filtered
#: (anti-aliasing); background textures are drawn at image_size
SUPERSAMPLE = 2
#: an object with fewer visible, unignored pixels than this fraction of its area is dropped
MIN_VISIBLE_FRAC = 0.02
#: ... or with fewer than this many (at 128 px; scaled with the image area, at least 4)
MIN_VISIBLE_PX = 16
#: probability that an object after the first is placed overlapping an earlier one
OVERLAP_PROB = 0.4
#: probability that a single-context image gets a second, object-free "distractor" region
DISTRACTOR_PROB = 0.2
#: per-pixel Gaussian noise (fraction of full scale) added to every image
NOISE_STD = 0.02
#: top share of the image when two object contexts share it (a uniform draw in this range)
SPLIT_RANGE = (0.38, 0.62)
#: share of the image a distractor region takes
DISTRACTOR_RANGE = (0.25, 0.38)
#: objects' centres stay this fraction of the side away from the image border
CENTRE_MARGIN = 0.14
#: placement attempts per object before the best candidate is taken
PLACEMENT_TRIES = 30

_C = len(CLASSES)
_PREF_IDX = np.array([CONTEXTS.index(PREFERRED_CONTEXT[c]) for c in CLASSES])
_NAME_RE = re.compile(r"^\.?(train|val)_\d{5,}\.(jpg|png)(\..*)?$")


# --------------------------------------------------------------------------- small helpers
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (Y, X) of an n x n image, normalised to [0, 1]."""
    c = (np.arange(n) + 0.5) / n
    y, x = np.meshgrid(c, c, indexing="ij")
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[float, float]) -> np.ndarray:
    """Smooth value noise in [0, 1] with about ``cells`` (rows, cols) lattice cells, separable."""
    h, w = shape
    cy, cx = max(cells[0], 1.0), max(cells[1], 1.0)
    g = rng.random((int(math.ceil(cy)) + 2, int(math.ceil(cx)) + 2))
    oy, ox = rng.random(2)

    def axis(n: int, c: float, o: float) -> tuple[np.ndarray, np.ndarray]:
        t = (np.arange(n) + 0.5) / n * c + o
        i = np.floor(t).astype(np.int64)
        f = t - i
        return i, f * f * (3 - 2 * f)

    iy, fy = axis(h, cy, oy)
    ix, fx = axis(w, cx, ox)
    rows = g[iy] * (1 - fy)[:, None] + g[iy + 1] * fy[:, None]
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _fbm(rng: np.random.Generator, n: int, cells: tuple[float, float], octaves: int = 3) -> np.ndarray:
    out, amp, tot = np.zeros((n, n)), 1.0, 0.0
    for k in range(octaves):
        out += amp * _noise(rng, (n, n), (cells[0] * 2 ** k, cells[1] * 2 ** k))
        tot += amp
        amp *= 0.5
    return out / tot


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours/images a -> b by weight t (H, W)."""
    t = t[..., None]
    return a * (1 - t) + b * t


# --------------------------------------------------------------------------- backgrounds
# each: (rng, n) -> (n, n, 3) float image in [0, 1] (before clipping), rendered at the output
# size n = image_size (textures need no supersampling; the horizon between two is anti-aliased)

def _bg_sky(rng: np.random.Generator, n: int) -> np.ndarray:
    Y, _ = _grid(n)
    h = _u(rng, 0.56, 0.62)
    top = _hsv(h, _u(rng, 0.55, 0.75), _u(rng, 0.68, 0.86))
    bot = _hsv(h + _u(rng, -0.02, 0.02), _u(rng, 0.12, 0.3), _u(rng, 0.9, 1.0))
    img = _mix(top, bot, Y ** _u(rng, 0.7, 1.4))
    c = 0.7 * _fbm(rng, n, (2.5, 4.0), 3) + 0.3 * _noise(rng, (n, n), (10, 14))
    cover = _u(rng, 0.45, 0.62)
    a = np.clip((c - cover) / 0.14, 0, 1) * _u(rng, 0.75, 0.95)
    cloud = _u(rng, 0.9, 1.0) * (0.86 + 0.14 * c)[..., None] * np.ones(3)
    return _mix(img, cloud, a)


def _bg_water(rng: np.random.Generator, n: int) -> np.ndarray:
    Y, X = _grid(n)
    base = _hsv(_u(rng, 0.49, 0.57), _u(rng, 0.55, 0.8), _u(rng, 0.36, 0.55))
    lam = _u(rng, 0.045, 0.085)
    warp = _noise(rng, (n, n), (3, 4))
    w = np.sin(2 * np.pi * (Y / lam + 1.3 * warp + 0.3 * np.sin(2 * np.pi * _u(rng, 1, 2.5) * X
                                                                   + _u(rng, 0, 6.3))))
    img = base * (1 + 0.2 * w + 0.25 * (_noise(rng, (n, n), (4, 4)) - 0.5))[..., None]
    glint = np.clip((w - 0.82) / 0.18, 0, 1) * _u(rng, 0.3, 0.6)
    return _mix(img, _hsv(0.53, 0.15, 0.95), glint)


def _bg_road(rng: np.random.Generator, n: int) -> np.ndarray:
    Y, X = _grid(n)
    base = _hsv(_u(rng, 0, 1), _u(rng, 0.0, 0.08), _u(rng, 0.26, 0.42))
    shade = (1 + 0.18 * (_noise(rng, (n, n), (3, 3)) - 0.5)
             + 0.06 * rng.standard_normal((n, n)))
    img = base * shade[..., None]
    ang = math.radians(_u(rng, -25, 25))
    t = -math.sin(ang) * (X - 0.5) + math.cos(ang) * (Y - 0.5)  # across the lanes
    a = math.cos(ang) * X + math.sin(ang) * Y                    # along the lanes
    spacing = _u(rng, 0.28, 0.45)
    d = (t - _u(rng, 0, spacing)) / spacing
    k = np.round(d)
    width = _u(rng, 0.018, 0.03)
    on = np.abs((d - k) * spacing) < width / 2
    period = _u(rng, 0.15, 0.25)
    dashed = ((a / period + _u(rng, 0, 1)) % 1.0) < 0.55
    solid_k = int(rng.integers(-2, 3)) if rng.random() < 0.6 else 99
    white = _hsv(0, 0, _u(rng, 0.82, 0.95))
    yellow = _hsv(_u(rng, 0.12, 0.15), _u(rng, 0.6, 0.85), _u(rng, 0.8, 0.95))
    paint = on & ((k == solid_k) | dashed)
    img = np.where((paint & (k != solid_k))[..., None], white * shade[..., None] ** 0.3, img)
    return np.where((paint & (k == solid_k))[..., None], yellow * shade[..., None] ** 0.3, img)


def _bg_grass(rng: np.random.Generator, n: int) -> np.ndarray:
    green = _hsv(_u(rng, 0.24, 0.32), _u(rng, 0.5, 0.75), _u(rng, 0.34, 0.52))
    dry = _hsv(_u(rng, 0.15, 0.2), _u(rng, 0.45, 0.65), _u(rng, 0.45, 0.6))
    img = _mix(green, dry, np.clip(_fbm(rng, n, (2, 2), 2) * 1.6 - 0.6, 0, 1) * _u(rng, 0.3, 0.8))
    blades = 0.6 * _noise(rng, (n, n), (n / 14, n / 1.25)) + 0.4 * _noise(rng, (n, n), (n / 7, n / 0.75))
    return img * (0.62 + 0.75 * blades)[..., None]


def _bg_sand(rng: np.random.Generator, n: int) -> np.ndarray:
    Y, X = _grid(n)
    base = _hsv(_u(rng, 0.085, 0.125), _u(rng, 0.26, 0.45), _u(rng, 0.7, 0.88))
    ang = _u(rng, 0, np.pi)
    a = math.cos(ang) * X + math.sin(ang) * Y
    r = np.sin(2 * np.pi * (a / _u(rng, 0.035, 0.065) + 1.2 * _noise(rng, (n, n), (3, 3))))
    shade = (1 + 0.08 * r + 0.12 * (_noise(rng, (n, n), (3, 3)) - 0.5)
             + 0.03 * rng.standard_normal((n, n)))
    return base * shade[..., None]


def _bg_indoor(rng: np.random.Generator, n: int) -> np.ndarray:
    Y, X = _grid(n)
    base = _hsv(_u(rng, 0.05, 0.09), _u(rng, 0.45, 0.68), _u(rng, 0.38, 0.6))
    ph, pl = _u(rng, 0.07, 0.11), _u(rng, 0.3, 0.55)
    r = Y / ph + _u(rng, 0, 1)
    row = np.floor(r).astype(np.int64)
    nrow = int(math.ceil(1 / ph)) + 2
    offs = rng.random(nrow)
    c = X / pl + offs[row]
    col = np.floor(c).astype(np.int64)
    tones = rng.uniform(0.78, 1.18, (nrow, int(math.ceil(1 / pl)) + 3))
    grain = _noise(rng, (n, n), (4 / ph, 2.5))
    shade = tones[row, col] * (0.85 + 0.3 * grain)
    seam = ((r - row) < 0.07) | ((c - col) < 0.012)
    shade = np.where(seam, 0.5 * shade, shade)
    return base * shade[..., None]


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sky": _bg_sky, "water": _bg_water, "road": _bg_road, "grass": _bg_grass,
    "sand": _bg_sand, "indoor": _bg_indoor,
}


# --------------------------------------------------------------------------- shape primitives
# all in object-local unit coordinates (u to the right/front, v downwards), extent about [-1, 1]

def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1.0


def _rect(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _rounded_rect(u, v, cu, cv, hw, hh, r):
    qx = np.maximum(np.abs(u - cu) - (hw - r), 0.0)
    qy = np.maximum(np.abs(v - cv) - (hh - r), 0.0)
    return (qx * qx + qy * qy < r * r) & (np.abs(u - cu) <= hw) & (np.abs(v - cv) <= hh)


def _poly(u, v, pts) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over pixels (loop over the edges only)."""
    inside = np.zeros(np.broadcast(u, v).shape, bool)
    pts = list(pts)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        if y1 == y2:
            continue
        cross = (y1 > v) != (y2 > v)
        xint = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cross & (u < xint)
    return inside


# --------------------------------------------------------------------------- classes
# each class: params(rng) -> dict (every random draw happens here, once), and
# draw(u, v, P, paint) -> (mask, rgb or None); rgb is (h, w, 3) over the window.

def _shade(u, v, P) -> np.ndarray:
    """Soft directional lighting over the object."""
    return 1 + P["light"] * (math.cos(P["light_dir"]) * u + math.sin(P["light_dir"]) * v)


def _common(rng: np.random.Generator) -> dict:
    return {"light": _u(rng, 0.05, 0.15), "light_dir": _u(rng, 0, 2 * np.pi)}


def _p_aeroplane(rng):
    body = _hsv(_u(rng, 0, 1), _u(rng, 0, 0.12), _u(rng, 0.62, 0.95))
    livery = _hsv(_u(rng, 0, 1), _u(rng, 0.5, 0.9), _u(rng, 0.5, 0.85)) if rng.random() < 0.4 else body
    return {**_common(rng), "body": body, "livery": livery, "sweep": _u(rng, 0.1, 0.4),
            "span": _u(rng, 0.8, 1.0), "chord": _u(rng, 0.25, 0.4), "fus": _u(rng, 0.12, 0.17)}


def _d_aeroplane(u, v, P, paint):
    av = -np.abs(v)  # mirror-symmetric about the fuselage axis
    fus = _ellipse(u, v, 0.0, 0.0, 1.0, P["fus"])
    s, span, ch = P["sweep"], P["span"], P["chord"]
    wings = _poly(u, av, [(0.3, 0.0), (0.3 - s, -span), (0.3 - s - ch * 0.6, -span), (0.3 - ch - 0.1, 0.0)])
    tail = _poly(u, av, [(-0.7, 0.0), (-0.86, -0.36), (-1.0, -0.36), (-0.95, 0.0)])
    mask = fus | wings | tail
    if not paint:
        return mask, None
    metal = (1.1 - 0.35 * np.abs(v) - 0.1 * u)[..., None]  # metallic: bright spine, dark edges
    rgb = np.where(((wings | tail) & ~fus)[..., None], P["livery"], P["body"]) * metal
    return mask, rgb * _shade(u, v, P)[..., None]


def _p_boat(rng):
    a = _hsv(_u(rng, 0, 1), _u(rng, 0.45, 0.9), _u(rng, 0.35, 0.9))
    b = _hsv(_u(rng, 0, 1), _u(rng, 0, 0.3), _u(rng, 0.75, 1.0)) if rng.random() < 0.6 else \
        _hsv(_u(rng, 0, 1), _u(rng, 0.45, 0.9), _u(rng, 0.2, 0.5))
    return {**_common(rng), "a": a, "b": b, "sail": _hsv(_u(rng, 0.05, 0.15), _u(rng, 0, 0.25), _u(rng, 0.8, 1.0)),
            "period": _u(rng, 0.1, 0.18), "phase": _u(rng, 0, 1), "jib": rng.random() < 0.6,
            "sail_h": _u(rng, 0.8, 1.0)}


def _d_boat(u, v, P, paint):
    hull = _poly(u, v, [(-1.0, 0.15), (1.05, 0.1), (0.7, 0.62), (-0.75, 0.62)])
    h = P["sail_h"]
    sail = _poly(u, v, [(0.02, 0.1), (0.02, -h), (0.72, 0.1)])
    if P["jib"]:
        sail |= _poly(u, v, [(-0.1, 0.1), (-0.1, -0.85 * h), (-0.68, 0.1)])
    mast = _rect(u, v, -0.1, 0.02, -h - 0.05, 0.15)
    mask = hull | sail | mast
    if not paint:
        return mask, None
    stripe = (np.floor(v / P["period"] + P["phase"]) % 2 == 0)[..., None]
    rgb = np.where(stripe, P["a"], P["b"])
    sail_rgb = P["sail"] * (1 - 0.08 * stripe)  # faint stripes on the sails too
    rgb = np.where((sail & ~hull)[..., None], sail_rgb, rgb)
    rgb = np.where((mast & ~hull & ~sail)[..., None], np.array([0.25, 0.2, 0.15]), rgb)
    return mask, rgb * _shade(u, v, P)[..., None]


def _p_car(rng):
    body = (_hsv(_u(rng, 0, 1), _u(rng, 0.5, 1.0), _u(rng, 0.45, 0.95)) if rng.random() < 0.75
            else _hsv(_u(rng, 0, 1), _u(rng, 0, 0.1), _u(rng, 0.2, 0.9)))
    return {**_common(rng), "body": body, "glass": _hsv(_u(rng, 0.55, 0.65), _u(rng, 0.1, 0.4), _u(rng, 0.15, 0.35)),
            "roof": _u(rng, 0.4, 0.55), "wheel": _u(rng, 0.18, 0.23)}


def _d_car(u, v, P, paint):
    body = _rounded_rect(u, v, 0.0, 0.15, 1.0, 0.27, 0.14)
    rf = P["roof"]
    cabin = _poly(u, v, [(-0.62, -0.08), (-0.38, -rf), (0.3, -rf), (0.55, -0.08)])
    r = P["wheel"]
    wheels = _ellipse(u, v, -0.58, 0.42, r, r) | _ellipse(u, v, 0.58, 0.42, r, r)
    mask = body | cabin | wheels
    if not paint:
        return mask, None
    win = (_poly(u, v, [(-0.52, -0.1), (-0.35, -rf + 0.06), (-0.04, -rf + 0.06), (-0.04, -0.1)])
           | _poly(u, v, [(0.03, -0.1), (0.03, -rf + 0.06), (0.26, -rf + 0.06), (0.44, -0.1)]))
    hubs = _ellipse(u, v, -0.58, 0.42, 0.4 * r, 0.4 * r) | _ellipse(u, v, 0.58, 0.42, 0.4 * r, 0.4 * r)
    gloss = (1 + 0.25 * np.exp(-((v + 0.02) / 0.06) ** 2))[..., None]  # highlight line along the body
    rgb = P["body"] * gloss
    rgb = np.where(win[..., None], P["glass"], rgb)
    rgb = np.where(wheels[..., None], np.where(hubs[..., None], 0.62, 0.08), rgb)
    return mask, rgb * _shade(u, v, P)[..., None]


def _p_cow(rng):
    kind = rng.random()
    if kind < 0.5:    # white with black patches
        base, spot = _hsv(0.1, _u(rng, 0, 0.12), _u(rng, 0.82, 0.97)), _hsv(0, 0, _u(rng, 0.05, 0.2))
    elif kind < 0.8:  # brown with white patches
        base = _hsv(_u(rng, 0.04, 0.09), _u(rng, 0.45, 0.7), _u(rng, 0.35, 0.6))
        spot = _hsv(0.1, 0.08, _u(rng, 0.8, 0.95))
    else:             # black with white patches
        base, spot = _hsv(0, 0, _u(rng, 0.08, 0.2)), _hsv(0.1, 0.05, _u(rng, 0.8, 0.95))
    k = int(rng.integers(6, 12))
    return {**_common(rng), "base": base, "spot": spot,
            "spots": np.column_stack([rng.uniform(-1, 1, k), rng.uniform(-0.6, 0.6, k), rng.uniform(0.1, 0.28, k)]),
            "legs": rng.uniform(-0.04, 0.04, 4)}


def _d_cow(u, v, P, paint):
    body = _ellipse(u, v, -0.08, -0.05, 0.72, 0.38)
    head = _ellipse(u, v, 0.8, -0.3, 0.22, 0.17)
    neck = _poly(u, v, [(0.45, -0.3), (0.72, -0.42), (0.78, -0.15), (0.5, 0.12)])
    legs = np.zeros_like(body)
    for c, d in zip((-0.58, -0.38, 0.25, 0.45), P["legs"]):
        legs |= _rect(u, v, c + d - 0.08, c + d + 0.08, 0.1, 0.85)
    mask = body | head | neck | legs
    if not paint:
        return mask, None
    spot = np.zeros_like(body)
    for cu, cv, r in P["spots"]:
        spot |= _ellipse(u, v, cu, cv, r, r * 0.85)
    rgb = np.where(spot[..., None], P["spot"], P["base"])
    return mask, rgb * _shade(u, v, P)[..., None]


def _p_bird(rng):
    if rng.random() < 0.75:
        col = _hsv(_u(rng, 0.04, 0.13), _u(rng, 0.15, 0.6), _u(rng, 0.35, 0.85))
    else:
        col = _hsv(_u(rng, 0.55, 0.65), _u(rng, 0.05, 0.3), _u(rng, 0.3, 0.75))
    k = int(rng.integers(4, 7))
    return {**_common(rng), "col": col, "k": k, "inner": _u(rng, 0.36, 0.55), "speckle": _u(rng, 0.15, 0.28),
            "rot": _u(rng, 0, 2 * np.pi / k), "seed": int(rng.integers(2 ** 31))}


def _d_bird(u, v, P, paint):
    k = P["k"]
    ang = P["rot"] + np.arange(2 * k) * np.pi / k
    rad = np.where(np.arange(2 * k) % 2 == 0, 1.0, P["inner"])
    mask = _poly(u, v, list(zip(rad * np.cos(ang), rad * np.sin(ang))))
    if not paint:
        return mask, None
    g = np.random.default_rng(P["seed"])
    speck = 1 + P["speckle"] * g.standard_normal(u.shape)
    rgb = P["col"] * (speck * _shade(u, v, P))[..., None]
    return mask, rgb


def _p_sofa(rng):
    a = _hsv(_u(rng, 0, 1), _u(rng, 0.3, 0.85), _u(rng, 0.3, 0.85))
    b = _hsv(_u(rng, 0, 1), _u(rng, 0.2, 0.85), _u(rng, 0.3, 0.85))
    return {**_common(rng), "a": a, "b": b, "period": _u(rng, 0.16, 0.28), "ph": rng.random(2)}


def _d_sofa(u, v, P, paint):
    seat = _rounded_rect(u, v, 0.0, 0.2, 0.95, 0.25, 0.08)
    back = _rounded_rect(u, v, 0.0, -0.32, 0.8, 0.36, 0.1)
    arms = _rounded_rect(u, v, -0.86, 0.08, 0.14, 0.37, 0.1) | _rounded_rect(u, v, 0.86, 0.08, 0.14, 0.37, 0.1)
    legs = _rect(u, v, -0.85, -0.72, 0.44, 0.6) | _rect(u, v, 0.72, 0.85, 0.44, 0.6)
    mask = seat | back | arms | legs
    if not paint:
        return mask, None
    p = P["period"]
    check = ((np.floor(u / p + P["ph"][0]) + np.floor(v / p + P["ph"][1])) % 2 == 0)[..., None]
    rgb = np.where(check, P["a"], P["b"])
    rgb = np.where((legs & ~seat & ~arms)[..., None], np.array([0.22, 0.14, 0.08]), rgb)
    return mask, rgb * _shade(u, v, P)[..., None]


_CLASS_DRAW: dict[str, tuple[Callable, Callable, bool]] = {
    # class: (params, draw, free rotation)
    "aeroplane": (_p_aeroplane, _d_aeroplane, True),
    "boat": (_p_boat, _d_boat, False),
    "car": (_p_car, _d_car, False),
    "cow": (_p_cow, _d_cow, False),
    "bird": (_p_bird, _d_bird, True),
    "sofa": (_p_sofa, _d_sofa, False),
}


# --------------------------------------------------------------------------- objects
class _Obj:
    """One placed object at render resolution: window, local coordinates, shape mask."""

    def __init__(self, k: int, cls: int, region: int, half: float, theta: float, aspect: float,
                 flip: bool, params: dict, scale: float) -> None:
        self.k, self.cls, self.region, self.scale = k, cls, region, scale
        self.half, self.theta, self.aspect, self.flip, self.params = half, theta, aspect, flip, params
        self.centre = (0.0, 0.0)
        self.visible = True

    def place(self, cx: float, cy: float, n: int) -> None:
        self.centre = (cx, cy)
        sa = math.sqrt(self.aspect)
        r = self.half * 1.6 * max(sa, 1 / sa)
        y0, y1 = int(math.floor(cy - r)), int(math.ceil(cy + r))
        x0, x1 = int(math.floor(cx - r)), int(math.ceil(cx + r))
        dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
        c, s = math.cos(self.theta), math.sin(self.theta)
        u = (c * dx + s * dy) / (self.half * sa)
        v = (-s * dx + c * dy) * sa / self.half
        if self.flip:
            u = -u
        self.u, self.v = u, v
        mask, _ = _CLASS_DRAW[CLASSES[self.cls]][1](u, v, self.params, False)
        self.area = int(mask.sum())
        # clip the window to the image
        self.sy = slice(max(y0, 0), min(y1, n))
        self.sx = slice(max(x0, 0), min(x1, n))
        self.wy = slice(self.sy.start - y0, self.sy.stop - y0)
        self.wx = slice(self.sx.start - x0, self.sx.stop - x0)
        self.mask = mask[self.wy, self.wx]

    def paint(self) -> np.ndarray:
        u, v = self.u[self.wy, self.wx], self.v[self.wy, self.wx]
        _, rgb = _CLASS_DRAW[CLASSES[self.cls]][1](u, v, self.params, True)
        return rgb


def _choose_contexts(rng: np.random.Generator, cfg: SyntheticConfig):
    """Classes, wanted contexts and the (at most two) background regions; see the module doc."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cls = rng.integers(0, _C, size=n)
    matched = rng.random(n) < cfg.context_prob
    ctx = np.empty(n, np.int64)
    n_ctx = len(CONTEXTS)
    for i in range(n):
        if matched[i]:
            ctx[i] = _PREF_IDX[cls[i]]
        else:
            others = [c for c in range(n_ctx) if c != _PREF_IDX[cls[i]]]
            ctx[i] = others[int(rng.integers(len(others)))]
    regions: list[int] = []
    for c in ctx:
        if int(c) not in regions and len(regions) < 2:
            regions.append(int(c))
    for i in range(n):
        if int(ctx[i]) not in regions:
            r = regions[int(rng.integers(len(regions)))]
            ctx[i] = r
            pool = [k for k in range(_C) if (_PREF_IDX[k] == r) == bool(matched[i])]
            cls[i] = pool[int(rng.integers(len(pool)))]
    distractor = False
    if len(regions) == 1 and rng.random() < DISTRACTOR_PROB:
        taken = set(regions) | {int(_PREF_IDX[c]) for c in cls}
        pool = [c for c in range(n_ctx) if c not in taken]
        if pool:
            regions.append(pool[int(rng.integers(len(pool)))])
            distractor = True
    return cls, ctx, regions, distractor


def _layout(rng: np.random.Generator, regions: list[int], distractor: bool, n: int):
    """Order the regions top to bottom and draw the horizon; returns (ordered, region map)."""
    if len(regions) == 1:
        return regions, np.zeros((n, n), np.int8)
    sky = CONTEXTS.index("sky")
    if sky in regions:
        ordered = [sky] + [r for r in regions if r != sky]
    else:
        ordered = [regions[i] for i in rng.permutation(2)]
    if distractor:
        share = _u(rng, *DISTRACTOR_RANGE)
        top = share if ordered[0] == regions[1] else 1 - share
    else:
        top = _u(rng, *SPLIT_RANGE)
    Y, X = _grid(n)
    tilt = math.tan(math.radians(_u(rng, -10, 10)))
    amp, freq, ph = _u(rng, 0, 0.025), _u(rng, 1, 3), _u(rng, 0, 2 * np.pi)
    horizon = top + tilt * (X - 0.5) + amp * np.sin(2 * np.pi * freq * X + ph)
    return ordered, (Y >= horizon).astype(np.int8)


def _place(rng: np.random.Generator, obj: _Obj, placed: list[_Obj], region_map: np.ndarray) -> None:
    """Put ``obj`` with its centre in its region, mostly inside the image and its region."""
    n = region_map.shape[0]
    lo, hi = CENTRE_MARGIN * n, (1 - CENTRE_MARGIN) * n
    near = bool(placed) and rng.random() < OVERLAP_PROB
    best, best_score = None, -1.0
    for attempt in range(PLACEMENT_TRIES):
        if near and attempt < PLACEMENT_TRIES // 2:
            p = placed[int(rng.integers(len(placed)))]
            ang, dist = _u(rng, 0, 2 * np.pi), _u(rng, 0.35, 0.85) * (obj.half + p.half)
            cx, cy = p.centre[0] + dist * math.cos(ang), p.centre[1] + dist * math.sin(ang)
        else:
            cx, cy = _u(rng, lo, hi), _u(rng, lo, hi)
        if not (lo <= cx <= hi and lo <= cy <= hi) or region_map[int(cy), int(cx)] != obj.region:
            continue
        obj.place(cx, cy, n)
        inside = obj.mask.sum()
        in_frame = inside / max(obj.area, 1)
        in_region = (region_map[obj.sy, obj.sx][obj.mask] == obj.region).sum() / max(inside, 1)
        if in_frame >= 0.75 and in_region >= 0.6:
            return
        score = min(in_frame / 0.75, 1) + in_region
        if score > best_score:
            best, best_score = (cx, cy), score
    if best is None:  # no candidate centre fell in the region: take a random pixel of it
        ys, xs = np.nonzero(region_map[int(lo):int(hi), int(lo):int(hi)] == obj.region)
        if len(ys) == 0:
            ys, xs = np.nonzero(region_map == obj.region)
            j = int(rng.integers(len(ys)))
            best = (xs[j] + 0.5, ys[j] + 0.5)
        else:
            j = int(rng.integers(len(ys)))
            best = (xs[j] + int(lo) + 0.5, ys[j] + int(lo) + 0.5)
    obj.place(best[0], best[1], n)


def _instances(objs: list[_Obj], n: int) -> np.ndarray:
    """Instance map at render resolution: 0 background, k+1 for object k (later over earlier)."""
    inst = np.zeros((n, n), np.int16)
    for o in objs:
        if o.visible:
            inst[o.sy, o.sx][o.mask] = o.k + 1
    return inst


def _box(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the first two axes (render -> output resolution)."""
    if f == 1:
        return a.astype(np.float64)
    out = np.zeros((a.shape[0] // f, a.shape[1] // f) + a.shape[2:])
    for dy in range(f):
        for dx in range(f):
            out += a[dy::f, dx::f]
    return out / (f * f)


def _upsample(a: np.ndarray, f: int) -> np.ndarray:
    """Nearest-neighbour f x enlargement of the first two axes (a fresh, writable array)."""
    h, w = a.shape[:2]
    big = np.broadcast_to(a[:, None, :, None], (h, f, w, f) + a.shape[2:])
    return big.reshape((h * f, w * f) + a.shape[2:]).copy()


def _downsample_instances(inst: np.ndarray, s: int, n_obj: int) -> np.ndarray:
    """Instance map at output resolution: the id covering most of each pixel's sub-samples."""
    f = inst.shape[0] // s
    ids = np.arange(n_obj + 1, dtype=inst.dtype)[:, None, None]
    counts = np.zeros((n_obj + 1, s, s), np.int16)
    for dy in range(f):
        for dx in range(f):
            counts += inst[None, dy::f, dx::f] == ids
    return counts.argmax(0).astype(np.int16)


def _inner_boundary(inst: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another id (the 1-px ignore band)."""
    p = np.pad(inst, 1, mode="edge")
    c = p[1:-1, 1:-1]
    diff = (p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)
    return diff & (inst > 0)


def _min_visible_px(s: int) -> int:
    return max(4, int(round(MIN_VISIBLE_PX * (s / 128) ** 2)))


# --------------------------------------------------------------------------- one image
def render_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw one image from ``rng``.

    Returns:
        image: (S, S, 3) uint8 RGB.
        mask: (S, S) uint8: 0 background, 1..C :data:`CLASSES`, 255 the 1-px boundary band.
        info: JSON-ready dict: ``contexts`` (background contexts, top region first),
        ``context_frac`` (their shares of the image), ``distractor`` (whether the second
        region is an object-free distractor), ``classes`` (visible class names, mask id
        order) and ``objects``, in drawing order, each with ``class``, ``context`` (the
        region holding most of it), ``preferred`` (context is the class's preferred one),
        ``visible`` (False: dropped, i.e. (nearly) hidden by later objects or too small,
        and not drawn), ``visible_px`` (unignored mask pixels), ``area_px`` (unoccluded
        area), ``centre`` (x, y px), ``scale`` (fraction of the side), ``angle``
        (degrees), ``aspect``, ``flip``.
    """
    s = cfg.image_size
    if s < 8:
        raise ValueError(f"synthetic.image_size must be >= 8, got {s}")
    lo_sc, hi_sc = cfg.scale_range
    min_px = _min_visible_px(s)
    for _ in range(50):  # redraw in the (rare, tiny-scale) case that nothing stays visible
        out = _render_once(rng, cfg, s, lo_sc, hi_sc, min_px)
        if out is not None:
            return out
    raise ValueError(f"no object stayed visible in 50 draws; is synthetic.scale_range "
                     f"{cfg.scale_range} too small for image_size {s}?")


def _render_once(rng, cfg, s, lo_sc, hi_sc, min_px):
    n = s * SUPERSAMPLE
    cls, ctx, regions, distractor = _choose_contexts(rng, cfg)
    ordered, region_map = _layout(rng, regions, distractor, n)
    objs = _draw_objects(rng, cls, ctx, ordered, region_map, n, lo_sc, hi_sc)
    inst1, band, counts = _drop_occluded(objs, n, s, min_px)
    if not any(o.visible for o in objs):
        return None
    image, frac = _paint(rng, objs, ordered, region_map, s)

    class_of = np.zeros(len(objs) + 1, np.uint8)
    for o in objs:
        class_of[o.k + 1] = o.cls + 1
    mask = class_of[inst1]
    mask[band] = 255

    records = _records(objs, ordered, region_map, counts)
    info = {
        "contexts": [CONTEXTS[r] for r in ordered],
        "context_frac": [round(f, 3) for f in frac],
        "distractor": distractor,
        "classes": [c for c in CLASSES if any(r["visible"] and r["class"] == c for r in records)],
        "objects": records,
    }
    return image, mask, info


def _draw_objects(rng, cls, ctx, ordered, region_map, n, lo_sc, hi_sc) -> list[_Obj]:
    """Draw each object's scale, angle, aspect, flip and shape, and place it (in order)."""
    objs: list[_Obj] = []
    for k, (c, cx_) in enumerate(zip(cls, ctx)):
        name = CLASSES[int(c)]
        make_params, _, free = _CLASS_DRAW[name]
        scale = _u(rng, lo_sc, hi_sc)
        theta = _u(rng, -np.pi, np.pi) if free else math.radians(_u(rng, -20, 20))
        aspect = math.exp(_u(rng, math.log(0.75), math.log(1.0 / 0.75)))
        flip = bool(rng.random() < 0.5)
        o = _Obj(k, int(c), ordered.index(int(cx_)), scale * n / 2, theta, aspect, flip,
                 make_params(rng), scale)
        _place(rng, o, objs, region_map)
        objs.append(o)
    return objs


def _drop_occluded(objs, n, s, min_px):
    """Occlusion: mark invisible the objects whose visible, unignored part is too small, until
    stable. Returns the (s, s) instance map, its inner boundary band and the visible pixel counts."""
    while True:
        inst = _instances(objs, n)
        inst1 = _downsample_instances(inst, s, len(objs))
        band = _inner_boundary(inst1)
        counts = np.bincount(inst1[~band].ravel(), minlength=len(objs) + 1)
        dropped = False
        for o in objs:
            need = max(min_px, MIN_VISIBLE_FRAC * o.area / SUPERSAMPLE ** 2)
            if o.visible and counts[o.k + 1] < need:
                o.visible, dropped = False, True
        if not dropped:
            return inst1, band, counts


def _paint(rng, objs, ordered, region_map, s):
    """The background, then the visible objects in order, box-filtered, with gain and noise.
    Returns the (s, s, 3) uint8 image and each context's share of the background."""
    bgs = [_BACKGROUNDS[CONTEXTS[r]](rng, s) for r in ordered]
    frac = [1.0]
    if len(bgs) == 1:
        bg = bgs[0]
    else:  # exactly the box filter of a hard horizon at render resolution
        below = _box(region_map, SUPERSAMPLE)
        bg = bgs[0] + below[..., None] * (bgs[1] - bgs[0])
        frac = [1 - float(below.mean()), float(below.mean())]
    img = _upsample(bg, SUPERSAMPLE)
    for o in objs:
        if o.visible:
            win = img[o.sy, o.sx]
            win[o.mask] = o.paint()[o.mask]
    img = _box(img, SUPERSAMPLE)
    img = img * _u(rng, 0.92, 1.08) + NOISE_STD * rng.standard_normal(img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), frac


def _records(objs, ordered, region_map, counts) -> list[dict]:
    """Each object's record for meta.json (see :func:`render_image`)."""
    records = []
    for o in objs:
        reg = region_map[o.sy, o.sx][o.mask]
        r = int(np.bincount(reg, minlength=2).argmax()) if reg.size else o.region
        context = CONTEXTS[ordered[min(r, len(ordered) - 1)]]
        name = CLASSES[o.cls]
        records.append({
            "class": name, "context": context, "preferred": context == PREFERRED_CONTEXT[name],
            "visible": o.visible, "visible_px": int(counts[o.k + 1]) if o.visible else 0,
            "area_px": int(round(o.area / SUPERSAMPLE ** 2)),
            "centre": [round(o.centre[0] / SUPERSAMPLE, 1), round(o.centre[1] / SUPERSAMPLE, 1)],
            "scale": round(o.scale, 3), "angle": round(math.degrees(o.theta), 1),
            "aspect": round(o.aspect, 3), "flip": o.flip,
        })
    return records


# --------------------------------------------------------------------------- the data set
def _config_record(cfg: SyntheticConfig) -> dict:
    """The configuration as recorded in meta.json: everything but out_dir (where is not what)."""
    d = dataclasses.asdict(cfg)
    d.pop("out_dir", None)
    return d


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete our own image/mask files (and leftover temporaries) not in ``keep``."""
    removed = 0
    for sub in ("JPEGImages", "SegmentationClass"):
        folder = out / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _NAME_RE.match(p.name) and not (p.name[0] != "." and p.name.split(".")[0] in keep):
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def generate(cfg: SyntheticConfig, progress: bool = True) -> dict:
    """Write the data set described by ``cfg`` under ``cfg.out_dir`` (see the module doc).

    Every file is written atomically; meta.json is removed first and written last, so
    an interrupted run shows as a missing meta.json. Files of an earlier, larger run
    (``train_*.jpg`` etc. beyond the new counts) are deleted.

    Returns:
        ``{"images": {split: n}, "class_counts": {class: visible objects},
        "image_counts": {class: images containing it}, "share_in_preferred" (visible
        objects in their preferred context), "mismatched_images" (images with a visible
        object outside its preferred context), "hidden_objects" (dropped, not drawn)}``.
    """
    from tqdm.auto import tqdm

    if cfg.seed < 0:
        raise ValueError(f"synthetic.seed must be >= 0, got {cfg.seed}")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, recursive=True)  # what a killed run left
    (out / "meta.json").unlink(missing_ok=True)
    pal = voc_palette()
    splits = [("train", cfg.n_train), ("val", cfg.n_val)]
    records: list[dict] = []
    lists: dict[str, list[str]] = {}
    with tqdm(total=sum(n for _, n in splits), desc="synthesize", disable=not progress) as bar:
        for si, (split, count) in enumerate(splits):
            names = []
            for i in range(count):
                image, mask, info = render_image(np.random.default_rng([cfg.seed, si, i]), cfg)
                name = f"{split}_{i:05d}"
                save_jpeg(out / "JPEGImages" / f"{name}.jpg", image, quality=cfg.jpeg_quality)
                save_png(out / "SegmentationClass" / f"{name}.png", mask, palette=pal)
                records.append({"name": name, "split": split, **info})
                names.append(name)
                bar.update(1)
            lists[split] = names
    _remove_stale(out, {r["name"] for r in records})
    for split, names in lists.items():
        write_text(out / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{n}\n" for n in names))
    meta = {
        "dataset": "synthetic-context",
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASSES),
        "contexts": list(CONTEXTS),
        "preferred_context": dict(PREFERRED_CONTEXT),
        "shapes": dict(SHAPES),
        "textures": dict(TEXTURES),
        "config": _config_record(cfg),
        "constants": {"supersample": SUPERSAMPLE, "min_visible_frac": MIN_VISIBLE_FRAC,
                      "min_visible_px": _min_visible_px(cfg.image_size), "overlap_prob": OVERLAP_PROB,
                      "distractor_prob": DISTRACTOR_PROB, "noise_std": NOISE_STD},
        "splits": {k: len(v) for k, v in lists.items()},
        "images": records,
    }
    write_json(out / "meta.json", meta)
    summary = _summary(meta)
    return summary


def _visible(meta: dict, split: str | None = None):
    for rec in meta["images"]:
        if split is None or rec["split"] == split:
            yield rec, [o for o in rec["objects"] if o["visible"]]


def _summary(meta: dict) -> dict:
    classes = meta["classes"]
    class_counts = {c: 0 for c in classes}
    image_counts = {c: 0 for c in classes}
    n_obj = n_pref = n_mis = n_hidden = 0
    for rec, vis in _visible(meta):
        for o in vis:
            class_counts[o["class"]] += 1
        for c in rec["classes"]:
            image_counts[c] += 1
        n_obj += len(vis)
        n_pref += sum(o["preferred"] for o in vis)
        n_mis += any(not o["preferred"] for o in vis)
        n_hidden += len(rec["objects"]) - len(vis)
    return {"images": dict(meta["splits"]), "class_counts": class_counts, "image_counts": image_counts,
            "share_in_preferred": round(n_pref / max(n_obj, 1), 4), "mismatched_images": n_mis,
            "hidden_objects": n_hidden}


def summarize(meta: dict, split: str | None = None):
    """Class x context co-occurrence: visible objects of each class on each context.

    Returns a pandas DataFrame of ints, rows ``meta["classes"]`` (index name "class"),
    columns ``meta["contexts"]`` (name "context"); the diagonal is each class's preferred
    context. ``split`` restricts it to one split ("train", "val"); None = all.
    """
    import pandas as pd

    table = pd.DataFrame(0, index=pd.Index(meta["classes"], name="class"),
                         columns=pd.Index(meta["contexts"], name="context"), dtype=int)
    for _, vis in _visible(meta, split):
        for o in vis:
            table.loc[o["class"], o["context"]] += 1
    return table


def context_stats(meta: dict) -> dict:
    """JSON-ready statistics of the context correlation (for reports/data_stats.json).

    ``share_in_preferred`` (visible objects in their class's preferred context, overall
    and ``per_class``), ``mismatched_images``, ``two_region_images``,
    ``distractor_images``, ``multi_class_images``, ``objects_per_image``,
    ``hidden_objects``, ``images``.
    """
    n_img = n_obj = n_pref = n_mis = n_two = n_dis = n_multi = n_hidden = 0
    per = {c: [0, 0] for c in meta["classes"]}
    for rec, vis in _visible(meta):
        n_img += 1
        n_obj += len(vis)
        n_hidden += len(rec["objects"]) - len(vis)
        n_pref += sum(o["preferred"] for o in vis)
        n_mis += any(not o["preferred"] for o in vis)
        n_two += len(rec["contexts"]) > 1
        n_dis += bool(rec.get("distractor"))
        n_multi += len(rec["classes"]) > 1
        for o in vis:
            per[o["class"]][0] += o["preferred"]
            per[o["class"]][1] += 1
    return {
        "images": n_img,
        "objects_per_image": round(n_obj / max(n_img, 1), 3),
        "share_in_preferred": round(n_pref / max(n_obj, 1), 4),
        "per_class": {c: round(p / max(t, 1), 4) for c, (p, t) in per.items()},
        "mismatched_images": n_mis,
        "two_region_images": n_two,
        "distractor_images": n_dis,
        "multi_class_images": n_multi,
        "hidden_objects": n_hidden,
    }


def read_meta(out_dir: str | Path) -> dict:
    """The ``meta.json`` that :func:`generate` wrote into ``out_dir``."""
    import json

    path = Path(out_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run the synthesize stage)") from None


def samples(out_dir: str | Path, split: str, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``n`` images of ``split``: ``(name, (H, W, 3) uint8 image, (H, W) uint8 mask)``."""
    from ..formats import read_lines, read_png_labels, read_rgb

    out = Path(out_dir)
    names = read_lines(out / "ImageSets" / "Segmentation" / f"{split}.txt")[:n]
    return [(name, read_rgb(out / "JPEGImages" / f"{name}.jpg"),
             read_png_labels(out / "SegmentationClass" / f"{name}.png")) for name in names]
