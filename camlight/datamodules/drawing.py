"""Cartoon cats and dogs drawn from a seed: the pixels behind `SyntheticPets`.

A scene is drawn in two steps so that tests can vary one thing at a time:
`sample_scene` turns a random generator into plain parameters (`Scene`), and `render` turns those
parameters into pixels and exact ground truth. Every random number a scene needs is drawn in
`sample_scene`, always in the same order and the same count, so a scene with its label switched or
its animal removed (`dataclasses.replace`) differs from the original in nothing else.

The animal is a face (a disc with two eyes and a nose) that cats and dogs share; a cat has two
pointed triangular ears on top, a dog two floppy elliptical ears hanging at the sides. The ears are
the only class evidence. Background: a random two-colour gradient, Gaussian noise and a few
translucent rectangles; 0-2 distractor faces without ears sit beside the animal.

Coordinates are pixels, x to the right and y down, pixel (y, x) having its centre at
(x + 0.5, y + 0.5). Shapes have hard edges, so masks are exact: a pixel belongs to an animal iff
the animal painted it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

CAT, DOG = 0, 1
CLASS_NAMES = ("cat", "dog")

# Sizes as fractions of the image side.
_ANIMAL_RADIUS = (0.12, 0.19)
_SMALL_RADIUS = (0.08, 0.11)  # layout "small"
_PAIR_RADIUS = (0.085, 0.115)
_DISTRACTOR_RADIUS = (0.06, 0.11)
_MARGIN = 1.7  # an animal fits in a circle of MARGIN * r around the face centre, nearly (ear tips)
_REACH = 1.85  # ... and wholly in one of REACH * r (a cat ear's tip: |(0.75, 1.65)| r = 1.81 r)
_MAX_ROTATION = np.deg2rad(25.0)
_DISTRACTOR_TRIES = 8
LAYOUTS = ("default", "small")


@dataclass(frozen=True)
class Face:
    """A face: disc of radius `r` at (`cx`, `cy`), rotated by `angle` radians, RGB `color`."""

    cx: float
    cy: float
    r: float
    angle: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Animal:
    """A face with ears. Both ear shapes are always sampled; `label` picks which one is drawn."""

    label: int
    face: Face
    cat_ear_height: float  # apex height above the face centre, in face radii
    dog_ear_length: float  # half-length of the hanging ellipse, in face radii
    dog_ear_tilt: float  # radians, the ear's top leaning towards the face


@dataclass(frozen=True)
class Background:
    color0: tuple[float, float, float]
    color1: tuple[float, float, float]
    direction: float  # radians, direction of the gradient
    noise_sigma: float
    noise_seed: int
    rects: tuple[tuple[int, int, int, int, float, tuple[float, float, float]], ...]  # y0,y1,x0,x1,alpha,rgb


@dataclass(frozen=True)
class Scene:
    size: int
    background: Background
    distractors: tuple[Face, ...]
    animals: tuple[Animal, ...] = field(default=())


@dataclass
class Rendered:
    """Pixels and ground truth of a scene.

    Attributes:
        image: (3,S,S) float32 in [0, 1].
        masks: (N,S,S) bool, one per animal in scene order: its face and ears as painted.
        parts: (N,S,S) bool, the ears of each animal.
    """

    image: np.ndarray
    masks: np.ndarray
    parts: np.ndarray


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0.05, 0.95, size=3))


def _contrasting(color: tuple[float, ...], against: np.ndarray) -> tuple[float, float, float]:
    """`color`, or its complement when it is too close to `against` to be seen."""
    c = np.asarray(color)
    if np.linalg.norm(c - against) < 0.4:
        c = 1.0 - c
    return tuple(float(v) for v in c)


def _face(rng: np.random.Generator, size: int, radius: tuple[float, float], bg_mean: np.ndarray) -> Face:
    r = rng.uniform(*radius) * size
    m = _MARGIN * r
    cx, cy = rng.uniform(m, size - m, size=2)
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    return Face(float(cx), float(cy), float(r), float(angle), _contrasting(_color(rng), bg_mean))


def _off_centre(face: Face, size: int) -> Face:
    """`face` moved away from the image centre, far enough that a map peaking at the centre misses
    it in the pointing game: the animal reaches at most REACH·r from its face centre, so its
    nearest pixel lies beyond the default tolerance (15·S/224) plus a pixel.

    The face's position, uniform in the square [m, S−m]² (m = MARGIN·r), is read as two numbers
    t in [0, 1]: the first sets the direction from the centre, the second the distance, from the
    tolerance's edge out to the square's side. No random number is drawn.
    """
    m = _MARGIN * face.r
    half = size / 2 - m
    t = (np.array([face.cx, face.cy]) - m) / max(size - 2 * m, 1e-6)
    theta = 2 * np.pi * t[0]
    c, s = np.cos(theta), np.sin(theta)
    near = _REACH * face.r + 15 * size / 224 + 1.0
    far = half / max(abs(c), abs(s))
    d = near + t[1] * max(far - near, 0.0)
    return Face(float(size / 2 + d * c), float(size / 2 + d * s), face.r, face.angle, face.color)


def _animal(rng: np.random.Generator, size: int, radius, bg_mean, label: int | None, layout: str = "default") -> Animal:
    drawn_label = int(rng.integers(0, 2))
    face = _face(rng, size, radius, bg_mean)
    if layout == "small":
        face = _off_centre(face, size)
    ear_height, ear_length, tilt = rng.uniform((1.4, 0.55, 0.1), (1.65, 0.7, 0.35))
    return Animal(drawn_label if label is None else label, face, float(ear_height), float(ear_length), float(tilt))


def _background(rng: np.random.Generator, size: int) -> Background:
    color0, color1 = _color(rng), _color(rng)
    direction = float(rng.uniform(0, 2 * np.pi))
    sigma = float(rng.uniform(0.02, 0.08))
    noise_seed = int(rng.integers(0, 2**63 - 1))
    n_rects = int(rng.integers(2, 6))
    rects = []
    for _ in range(5):  # always draw five, use n_rects: the number of draws never depends on values
        h, w = (rng.uniform(0.1, 0.4, size=2) * size).astype(int) + 1
        y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        alpha = float(rng.uniform(0.25, 0.5))
        rects.append((int(y0), int(y0 + h), int(x0), int(x0 + w), alpha, _color(rng)))
    return Background(color0, color1, direction, sigma, noise_seed, tuple(rects[:n_rects]))


def _distractors(rng: np.random.Generator, size: int, animals: tuple[Animal, ...], bg_mean) -> tuple[Face, ...]:
    count = int(rng.integers(0, 3))
    faces = []
    for k in range(2):  # always sample two candidates with their tries; keep `count` of them
        r = rng.uniform(*_DISTRACTOR_RADIUS) * size
        xs, ys = rng.uniform(r, size - r, size=(2, _DISTRACTOR_TRIES))
        angle = float(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
        color = _contrasting(_color(rng), bg_mean)
        if k >= count:
            continue
        others = [(a.face.cx, a.face.cy, _MARGIN * a.face.r) for a in animals]
        others += [(f.cx, f.cy, f.r) for f in faces]
        for x, y in zip(xs, ys, strict=True):
            if all(np.hypot(x - ox, y - oy) > orad + r + 1 for ox, oy, orad in others):
                faces.append(Face(float(x), float(y), float(r), angle, color))
                break
    return tuple(faces)


def sample_scene(
    rng: np.random.Generator, size: int, label: int | None = None, pair: bool = False, layout: str = "default"
) -> Scene:
    """Draw the parameters of one scene.

    Args:
        rng: the scene's own generator; the same generator state gives the same scene.
        size: image side S in pixels.
        label: force the animal's class (`CAT` or `DOG`); None draws it.
        pair: draw a cat and a dog side by side (left/right order random) instead of one animal.
        layout: the single animal's size and place. "default": face radius 0.12–0.19 S anywhere
            it fits, so most animals cover the image centre; "small": radius 0.08–0.11 S, placed
            off centre (`_off_centre`), so a map that ignores the image scores low. Both draw the
            same random numbers: only the animal's radius and place differ, and the distractors
            that avoid it. The pair layout is the same in both.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    bg = _background(rng, size)
    bg_mean = (np.asarray(bg.color0) + np.asarray(bg.color1)) / 2
    if pair:
        cat_left = bool(rng.integers(0, 2))
        cat = _animal(rng, size, _PAIR_RADIUS, bg_mean, CAT)
        dog = _animal(rng, size, _PAIR_RADIUS, bg_mean, DOG)
        # Put each animal in its own half: map its centre x from [m, S-m] into that half.
        placed = []
        for animal, left in ((cat, cat_left), (dog, not cat_left)):
            f = animal.face
            m = _MARGIN * f.r
            lo, hi = (m, size / 2 - m) if left else (size / 2 + m, size - m)
            t = (f.cx - m) / max(size - 2 * m, 1e-6)
            face = Face(lo + t * (hi - lo), f.cy, f.r, f.angle, f.color)
            placed.append(Animal(animal.label, face, animal.cat_ear_height, animal.dog_ear_length, animal.dog_ear_tilt))
        animals = tuple(placed)
    else:
        radius = _SMALL_RADIUS if layout == "small" else _ANIMAL_RADIUS
        animals = (_animal(rng, size, radius, bg_mean, label, layout),)
    return Scene(size, bg, _distractors(rng, size, animals, bg_mean), animals)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(c, c, indexing="ij")
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def _local(face: Face, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the face's frame, in face radii: u to the face's right, v down."""
    ys, xs = _grid(size)
    c, s = np.cos(face.angle), np.sin(face.angle)
    dx, dy = (xs - face.cx) / face.r, (ys - face.cy) / face.r
    return c * dx + s * dy, -s * dx + c * dy


def _face_masks(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(disc, eyes and nose) in local coordinates."""
    au = np.abs(u)
    disc = u * u + v * v <= 1.0
    dark = ((au - 0.38) ** 2 + (v + 0.15) ** 2 <= 0.16**2) | (u * u + (v - 0.35) ** 2 <= 0.11**2)
    return disc, dark


def _cat_ears(u: np.ndarray, v: np.ndarray, height: float) -> np.ndarray:
    """Two triangles on top of the head (mirror images through |u|)."""
    au = np.abs(u)
    tri = np.array([[0.2, -0.9], [0.95, -0.4], [0.75, -height]], dtype=np.float32)
    inside = np.ones_like(au, dtype=bool)
    for i in range(3):
        (x0, y0), (x1, y1) = tri[i], tri[(i + 1) % 3]
        (x2, y2) = tri[(i + 2) % 3]
        side = np.sign((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0))  # the third vertex's side
        inside &= side * ((x1 - x0) * (v - y0) - (y1 - y0) * (au - x0)) >= 0
    return inside


def _dog_ears(u: np.ndarray, v: np.ndarray, length: float, tilt: float) -> np.ndarray:
    """Two ellipses hanging at the sides of the head, tops leaning in."""
    eu, ev = np.abs(u) - 0.98, v - 0.3
    c, s = np.cos(tilt), np.sin(tilt)
    p, q = c * eu + s * ev, -s * eu + c * ev
    return (p / 0.3) ** 2 + (q / length) ** 2 <= 1.0


def _paint(image: np.ndarray, mask: np.ndarray, color) -> None:
    for ch in range(3):
        image[ch][mask] = color[ch]


def _paint_face(image: np.ndarray, face: Face, ears: np.ndarray | None, u, v) -> np.ndarray:
    disc, dark = _face_masks(u, v)
    color = np.asarray(face.color, dtype=np.float32)
    if ears is not None:
        _paint(image, ears & ~disc, color * 0.6)
    _paint(image, disc, color)
    _paint(image, disc & dark, color * 0.25)
    return disc


def render(scene: Scene) -> Rendered:
    """Pixels and exact ground truth of `scene`."""
    size, bg = scene.size, scene.background
    ys, xs = _grid(size)
    g = ((xs - size / 2) * np.cos(bg.direction) + (ys - size / 2) * np.sin(bg.direction)) / size + 0.5
    c0, c1 = (np.asarray(c, dtype=np.float32)[:, None, None] for c in (bg.color0, bg.color1))
    image = c0 + (c1 - c0) * g[None]
    for y0, y1, x0, x1, alpha, color in bg.rects:
        image[:, y0:y1, x0:x1] = (1 - alpha) * image[:, y0:y1, x0:x1] + alpha * np.asarray(color, np.float32)[
            :, None, None
        ]
    noise = np.random.default_rng(bg.noise_seed).standard_normal((3, size, size), dtype=np.float32)
    image += bg.noise_sigma * noise
    np.clip(image, 0.0, 1.0, out=image)
    for face in scene.distractors:
        _paint_face(image, face, None, *_local(face, size))
    masks = np.zeros((len(scene.animals), size, size), dtype=bool)
    parts = np.zeros_like(masks)
    for k, animal in enumerate(scene.animals):
        u, v = _local(animal.face, size)
        if animal.label == CAT:
            ears = _cat_ears(u, v, animal.cat_ear_height)
        else:
            ears = _dog_ears(u, v, animal.dog_ear_length, animal.dog_ear_tilt)
        disc = _paint_face(image, animal.face, ears, u, v)
        parts[k] = ears & ~disc
        masks[k] = disc | ears
        # A later animal may cover an earlier one: keep each mask to what is visible.
        masks[:k] &= ~masks[k]
        parts[:k] &= ~masks[k]
    return Rendered(image.astype(np.float32, copy=False), masks, parts)
