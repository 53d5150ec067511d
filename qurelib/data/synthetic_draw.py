"""Rendering of Fashion-Shapes images: garment silhouettes with visible attributes at 64x64.

Each image is drawn at 2x (128 px) with PIL polygons, patterned and shaded with numpy, then
box-downsampled to 64 px (anti-aliasing) and given pixel noise. Semantic attributes change the
garment (colour, pattern, sleeves, length); nuisance factors change everything else (position,
scale, rotation, shade, background, noise, pattern phase), so many images share one attribute
combination. Drawing is a pure function of (category, attributes, nuisance): same inputs, same
bytes.

`render_image` draws the discrete attributes; `render_continuous` draws the continuous variant's
(hue in degrees; sleeve length, hem length and dot density as fractions), both through
`render_garment`.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # output side in pixels
_S = 2 * SIZE  # drawing side (supersampled)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40), "blue": (40, 75, 205), "green": (40, 150, 60),
    "yellow": (230, 200, 40), "purple": (135, 55, 175),
}
# Hem height (garment units below the shoulder line) per category and length value.
HEMS = {"dress": {"cropped": 0.55, "regular": 0.8, "long": 1.05},
        "shirt": {"cropped": 0.42, "regular": 0.62, "long": 0.82},
        "toptee": {"cropped": 0.42, "regular": 0.62, "long": 0.82}}
SLEEVE_LENGTH = {"sleeveless": 0.0, "short": 0.17, "long": 0.55}
_SPAN = 0.85 / 1.25  # the widest garment (1.25 units, long sleeves) spans 85% of the side

# The continuous variant (synthetic_continuous.py): attribute fractions in [0, 1] -> drawing.
HEM_RANGE = {"dress": (0.5, 1.08), "shirt": (0.38, 0.86), "toptee": (0.38, 0.86)}  # length 0 -> 1
SLEEVE_RANGE = 0.6  # sleeve length (garment units) at sleeves = 1; 0 = sleeveless
DOT_PERIOD = (30.0, 9.0)  # dot spacing (supersampled px) at density 0 and 1, geometric in between
DOT_RADIUS = 2.4  # supersampled px
HUE_SATURATION, HUE_VALUE = 0.75, 0.82  # HSV of the fabric; the hue is the attribute


def sample_nuisance(rng: np.random.Generator) -> dict:
    """Nuisance factors of one image, rounded so the JSON record reproduces the image exactly."""
    grey = int(rng.integers(195, 246))
    return {
        "dx": round(float(rng.uniform(-4, 4)), 2), "dy": round(float(rng.uniform(-3, 3)), 2),
        "scale": round(float(rng.uniform(0.85, 1.0)), 3),
        "rotation": round(float(rng.uniform(-8, 8)), 2),  # degrees
        "shade": round(float(rng.uniform(0.8, 1.12)), 3),
        "background": [int(np.clip(grey + rng.integers(-8, 9), 0, 255)) for _ in range(3)],
        "noise": round(float(rng.uniform(1.0, 6.0)), 2),  # pixel std, 0..255 scale
        "phase": [int(rng.integers(0, 16)), int(rng.integers(0, 16))],
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def _body(category: str, hem: float) -> list[tuple[float, float]]:
    """Body outline in garment units (x right, y down from the shoulder line)."""
    if category == "dress":
        waist = min(0.32, hem * 0.5)
        flare = 0.2 + 0.3 * hem
        return [(-0.17, 0.0), (0.17, 0.0), (0.14, waist), (flare, hem), (-flare, hem),
                (-0.14, waist)]
    if category == "shirt":
        return [(-0.24, 0.0), (-0.08, -0.04), (0.08, -0.04), (0.24, 0.0), (0.24, hem),
                (-0.24, hem)]
    return [(-0.2, 0.0), (0.2, 0.0), (0.22, hem), (-0.22, hem)]  # toptee: tapered tee


def _sleeve(category: str, length: float, side: int) -> list[tuple[float, float]]:
    """One sleeve, a parallelogram hanging down-outwards from the shoulder (side -1 / +1)."""
    x0 = {"dress": 0.17, "shirt": 0.24, "toptee": 0.2}[category] - 0.01
    ux, uy = side * math.sin(math.radians(38)), math.cos(math.radians(38))  # along the sleeve
    top, arm = (side * x0, 0.0), (side * x0, 0.15)
    return [top, (top[0] + ux * length, top[1] + uy * length),
            (arm[0] + ux * length, arm[1] + uy * length), arm]


def _to_pixels(points, nuisance: Mapping, extent: float) -> list[tuple[float, float]]:
    """Garment units -> supersampled pixels: scale, rotate about the centre, translate."""
    unit = _S * _SPAN * nuisance["scale"]  # pixels per garment unit
    theta = math.radians(nuisance["rotation"])
    c, s = math.cos(theta), math.sin(theta)
    cy = extent / 2  # vertical centre of the garment in units
    out = []
    for x, y in points:
        x, y = x * unit, (y - cy) * unit
        out.append((_S / 2 + c * x - s * y + 2 * nuisance["dx"],
                    _S / 2 + s * x + c * y + 2 * nuisance["dy"]))
    return out


def _pattern_tiles() -> dict[str, np.ndarray]:
    """Boolean (S+16, S+16) maps of the pattern marks, sliced at the image's phase."""
    yy, xx = np.mgrid[0:_S + 16, 0:_S + 16]
    return {"striped": (yy % 12) < 5,
            "dotted": ((xx % 14) - 7) ** 2 + ((yy % 14) - 7) ** 2 < 13,  # radius ~3.6 px
            "checked": ((xx % 16) < 4) | ((yy % 16) < 4),
            "plain": np.zeros((_S + 16, _S + 16), dtype=bool)}


_TILES = _pattern_tiles()


def _pattern_mask(pattern: str, phase) -> np.ndarray:
    """Boolean (S, S) map of the pattern marks (stripes, dots, checks); all False for plain."""
    px, py = phase
    return _TILES[pattern][py:py + _S, px:px + _S]


def _garment_mask(category: str, hem: float, sleeve: float, nuisance: Mapping) -> Image.Image:
    """Anti-aliasable 'L' mask of the silhouette at 2x, neckline cut for the toptee (hem and sleeve
    length in garment units)."""
    mask = Image.new("L", (_S, _S), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(_to_pixels(_body(category, hem), nuisance, hem), fill=255)
    if sleeve > 0:
        for side in (-1, 1):
            draw.polygon(_to_pixels(_sleeve(category, sleeve, side), nuisance, hem), fill=255)
    if category == "toptee":  # round neckline: a scoop cut out of the shoulder line
        (cx, cy), = _to_pixels([(0.0, 0.0)], nuisance, hem)
        r = 0.09 * _S * _SPAN * nuisance["scale"]
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=0)
    return mask


def _details(img: Image.Image, category: str, hem: float, nuisance: Mapping,
             dark: tuple[int, ...]) -> None:
    """Category cues drawn over the fabric: shirt collar and button placket, dress waistband."""
    draw = ImageDraw.Draw(img)
    if category == "shirt":
        draw.polygon(_to_pixels([(-0.09, -0.04), (0.09, -0.04), (0.0, 0.1)], nuisance, hem),
                     fill=(250, 250, 250))
        draw.line(_to_pixels([(0.0, 0.1), (0.0, hem)], nuisance, hem), fill=dark, width=3)
    elif category == "dress":
        waist = min(0.32, hem * 0.5)
        draw.line(_to_pixels([(-0.14, waist), (0.14, waist)], nuisance, hem), fill=dark, width=4)


def render_garment(category: str, hem: float, sleeve: float, base: np.ndarray, marks: np.ndarray,
                   mark_colour: np.ndarray, nuisance: Mapping) -> Image.Image:
    """The 64x64 RGB image of a garment from drawing quantities (both variants draw through it).

    hem, sleeve: lengths in garment units (sleeve 0 = none); base: (3,) fabric colour, shade
    applied; marks: (S, S) bool pattern marks; mark_colour: (3,) colour of the marks.
    """
    fabric = np.where(marks[..., None], mark_colour, base)  # (S, S, 3)
    background = np.array(nuisance["background"], dtype=np.float32)
    alpha = np.asarray(_garment_mask(category, hem, sleeve, nuisance), dtype=np.float32)[..., None]
    canvas = fabric * (alpha / 255) + background * (1 - alpha / 255)  # (S, S, 3)
    img = Image.fromarray(canvas.round().astype(np.uint8), "RGB")
    _details(img, category, hem, nuisance, tuple(int(v) for v in base * 0.35))
    small = np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float32)
    noise = np.random.default_rng(nuisance["noise_seed"]).normal(0, nuisance["noise"], small.shape)
    return Image.fromarray(np.clip(small + noise, 0, 255).round().astype(np.uint8), "RGB")


def render_image(category: str, attributes: Mapping, nuisance: Mapping) -> Image.Image:
    """The 64x64 RGB image of a garment with discrete attributes (see module docstring)."""
    base = np.array(COLOURS[attributes["colour"]], dtype=np.float32) * nuisance["shade"]
    base = np.clip(base, 0, 255)
    marks = {"striped": np.clip(base * 0.3 + 0.7 * 255, 0, 255), "dotted": np.full(3, 250.0),
             "checked": base * 0.35}.get(attributes["pattern"], base)
    return render_garment(category, HEMS[category][attributes["length"]],
                          SLEEVE_LENGTH[attributes["sleeves"]], base,
                          _pattern_mask(attributes["pattern"], nuisance["phase"]), marks, nuisance)


_AXIS = np.arange(_S, dtype=np.float64)  # supersampled pixel coordinates


def hue_colour(hue: float) -> np.ndarray:
    """(3,) float32 RGB (0..255) of a hue in degrees at the fixed saturation and value."""
    return np.array(colorsys.hsv_to_rgb((hue % 360) / 360, HUE_SATURATION, HUE_VALUE),
                    dtype=np.float32) * 255


def dot_mask(density: float, phase) -> np.ndarray:
    """Boolean (S, S) polka dots whose spacing shrinks geometrically with `density` in [0, 1]."""
    period = DOT_PERIOD[0] * (DOT_PERIOD[1] / DOT_PERIOD[0]) ** density
    dx = (_AXIS + phase[0]) % period - period / 2  # (S,) along x
    dy = (_AXIS + phase[1]) % period - period / 2  # (S,) along y
    return dy[:, None] ** 2 + dx[None, :] ** 2 < DOT_RADIUS ** 2


def render_continuous(category: str, attributes: Mapping, nuisance: Mapping) -> Image.Image:
    """The 64x64 RGB image of a garment with continuous attributes: "hue" (degrees), "sleeves",
    "length" and "density" (fractions in [0, 1]); nuisance as `sample_nuisance` draws it."""
    base = np.clip(hue_colour(attributes["hue"]) * nuisance["shade"], 0, 255)
    lo, hi = HEM_RANGE[category]
    return render_garment(category, lo + (hi - lo) * attributes["length"],
                          SLEEVE_RANGE * attributes["sleeves"], base,
                          dot_mask(attributes["density"], nuisance["phase"]), np.full(3, 250.0),
                          nuisance)
