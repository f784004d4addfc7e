"""Synthetic federated skin-lesion datasets for demos, tests and the simulator.

No real medical images ship with the project and no pretrained CLIP weights can be
downloaded here, so the demos need data that a small model can learn from raw pixels
and that has the two heterogeneities federated learning is about:

- label skew: each hospital's class mix is drawn from Dirichlet(alpha), so with a small
  alpha a hospital sees mostly one or two classes and may lack some entirely;
- domain shift: each hospital has a fixed "camera" (colour cast, contrast, brightness,
  blur, sensor noise) applied to all its images.

Each class has its own lesion shape (round, star, elongated, ring, ...), texture (smooth,
dotted, striped, ...) and tint; position, size, rotation, skin tone and lesion shade vary
per image. The output is one ImageFolder per hospital plus the global class list:
``out/hospital_<i>/<class>/<n>.png`` and ``out/classes.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .datasets import ClassIndex

LESION_NAMES = (
    "nevus",
    "melanoma",
    "keratosis",
    "carcinoma",
    "dermatofibroma",
    "angioma",
    "lentigo",
    "wart",
)
_SHAPES = ("round", "star", "elongated", "ring", "lobed", "crescent")
_TEXTURES = ("smooth", "dotted", "striped", "mottled", "reticular")
# Every class gets a distinct (shape, texture) pair, see _look().
MAX_CLASSES = len(_SHAPES) * len(_TEXTURES)
CLASSES_FILE = "classes.json"

_SKIN_TONES = np.array(
    [[233, 196, 172], [224, 172, 140], [198, 144, 110], [170, 120, 90], [240, 208, 190]],
    dtype=np.float32,
)
_LESION_BROWN = np.array([118, 76, 56], dtype=np.float32)


@dataclass(frozen=True)
class SynthSummary:
    """What was written: ``per_hospital[folder name][class name]`` is an image count
    (0 where the hospital lacks the class)."""

    root: Path
    class_names: list[str]
    per_hospital: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return sum(sum(counts.values()) for counts in self.per_hospital.values())

    @property
    def hospital_dirs(self) -> list[Path]:
        return [self.root / name for name in self.per_hospital]


@dataclass(frozen=True)
class _Camera:
    """A hospital's fixed acquisition pipeline: the domain shift between sites."""

    gain: np.ndarray  # per-channel colour cast
    contrast: float
    brightness: float
    blur: float  # Gaussian radius in pixels
    noise: float  # sensor noise standard deviation in grey levels


def synth_class_names(classes: int) -> list[str]:
    """Lesion names for the first ``classes`` classes, then ``lesion_<k>``."""
    return [LESION_NAMES[k] if k < len(LESION_NAMES) else f"lesion_{k}" for k in range(classes)]


def synthesize_federation(
    out: Path,
    *,
    hospitals: int = 4,
    classes: int = 4,
    per_hospital: int = 200,
    seed: int = 0,
    alpha: float = 0.5,
    image_size: int = 96,
    domain_shift: float = 1.0,
    class_cue: float = 1.0,
    rare: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic federation into ``out`` (which must be new or empty).

    Deterministic for a seed; hospital i depends only on (seed, i), so adding hospitals
    leaves the existing ones unchanged. Each hospital gets exactly ``per_hospital``
    images and at least two classes with ``max(2, per_hospital // 20)`` images or more.
    ``progress`` is called with the number of images written so far.

    ``domain_shift`` scales how far each hospital's camera departs from a neutral one (0:
    no shift) and ``class_cue`` how far each class's tint and texture contrast depart from
    plain brown (above 1: classes easier to tell apart). Both default to 1, which gives
    exactly the images of earlier versions; the demo raises the cue and lowers the shift
    so that features of a random-weight backbone separate the classes (see
    ``services/commands/demo/config.py``).

    ``rare=(k, m)`` replaces the Dirichlet mix by the rare-class scenario: hospital i holds
    only ``m`` images of each of the ``k`` classes ``i, i+1, ... (mod classes)`` and splits
    the rest evenly over the other classes, so every class is rare somewhere and common
    elsewhere (what a federation should be able to teach a site; ``alpha`` is then unused).
    """
    _check_arguments(hospitals, classes, per_hospital, alpha, image_size)
    if domain_shift < 0 or class_cue <= 0:
        raise ValueError("domain_shift must be non-negative and class_cue positive")
    if rare is not None:
        _check_rare(rare, classes, per_hospital)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; synthesize into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    names = synth_class_names(classes)
    ClassIndex(names).save(out / CLASSES_FILE)
    coords = np.mgrid[0:image_size, 0:image_size].astype(np.float32) + 0.5
    per_hospital_counts: dict[str, dict[str, int]] = {}
    written = 0
    for hospital in range(hospitals):
        rng = np.random.default_rng([seed, hospital])
        camera = _draw_camera(rng, image_size, domain_shift)
        counts = (
            _draw_class_counts(rng, classes, per_hospital, alpha)
            if rare is None
            else _rare_class_counts(hospital, classes, per_hospital, *rare)
        )
        hospital_dir = out / f"hospital_{hospital}"
        for class_id, count in enumerate(counts):
            class_dir = hospital_dir / names[class_id]
            if count:
                class_dir.mkdir(parents=True)
            for n in range(count):
                pixels = _render(rng, coords, class_id, camera, class_cue)
                # Level 1: these files are throwaway, so speed beats size.
                Image.fromarray(pixels).save(class_dir / f"{n:04d}.png", compress_level=1)
                written += 1
                if progress is not None:
                    progress(written)
        per_hospital_counts[hospital_dir.name] = {
            name: int(count) for name, count in zip(names, counts, strict=True)
        }
    return SynthSummary(root=out, class_names=names, per_hospital=per_hospital_counts)


def _check_arguments(
    hospitals: int, classes: int, per_hospital: int, alpha: float, image_size: int
) -> None:
    if hospitals < 1:
        raise ValueError("hospitals must be at least 1")
    if not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 2 and {MAX_CLASSES}")
    if per_hospital < 4:
        raise ValueError("per_hospital must be at least 4 (two classes of two images)")
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    if image_size < 32:
        raise ValueError("image_size must be at least 32 pixels")


def _draw_camera(rng: np.random.Generator, image_size: int, shift: float = 1.0) -> _Camera:
    """The same draws whatever ``shift``, so scaling the shift keeps every other draw (and
    so the images' content) of a seed; only the departures from neutral are scaled."""
    gain = rng.uniform(0.82, 1.18, 3).astype(np.float32)
    contrast = float(rng.uniform(0.7, 1.3))
    brightness = float(rng.uniform(-20.0, 20.0))
    blur = float(rng.choice([0.0, 0.6, 1.2])) * image_size / 96
    noise = float(rng.uniform(2.0, 12.0))
    return _Camera(
        gain=(1 + shift * (gain - 1)).astype(np.float32),
        contrast=1 + shift * (contrast - 1),
        brightness=shift * brightness,
        blur=shift * blur,
        noise=shift * noise,
    )


def _draw_class_counts(
    rng: np.random.Generator, classes: int, per_hospital: int, alpha: float
) -> np.ndarray:
    """Dirichlet(alpha) class mix, then make sure the two biggest classes have a few
    images each: a site with a single class cannot train a classifier."""
    weights = rng.dirichlet(np.full(classes, alpha))
    counts = rng.multinomial(per_hospital, weights)
    first, second = np.lexsort((-weights, -counts))[:2]  # by count, ties by weight
    shortfall = max(2, per_hospital // 20) - counts[second]
    if shortfall > 0:
        counts[first] -= shortfall
        counts[second] += shortfall
    return counts


def _check_rare(rare: tuple[int, int], classes: int, per_hospital: int) -> None:
    k, m = rare
    if not 1 <= k < classes:
        raise ValueError(f"the rare-class scenario needs 1 <= rare classes < {classes}, got {k}")
    if m < 0 or per_hospital - k * m < 2 * (classes - k):
        raise ValueError(
            f"{k} rare classes of {m} images leave too few of {per_hospital} for the others"
        )


def _rare_class_counts(
    hospital: int, classes: int, per_hospital: int, k: int, m: int
) -> np.ndarray:
    """Hospital ``hospital``'s counts in the rare-class scenario (see synthesize_federation)."""
    rare = {(hospital + j) % classes for j in range(k)}
    common = [c for c in range(classes) if c not in rare]
    counts = np.zeros(classes, dtype=np.int64)
    counts[list(rare)] = m
    share, extra = divmod(per_hospital - k * m, len(common))
    for n, c in enumerate(common):
        counts[c] = share + (n < extra)
    return counts


def _look(class_id: int) -> tuple[str, str]:
    """The class's (shape, texture). With k = 6a + s this is (s, (3a + s) mod 5), a
    bijection onto all 30 pairs, so no two classes look alike."""
    return (
        _SHAPES[class_id % len(_SHAPES)],
        _TEXTURES[(2 * (class_id // len(_SHAPES)) + class_id) % len(_TEXTURES)],
    )


def _class_tint(class_id: int, cue: float = 1.0) -> np.ndarray:
    """A fixed per-class colour tint, independent of the seed, so a class looks the same
    in every synthetic federation. ``cue`` scales its departure from neutral (1)."""
    rng = np.random.default_rng(7919 + class_id)
    # A shade (lighter / darker) times a mild hue shift keeps every tint brownish-red.
    tint = rng.uniform(0.65, 1.25) * rng.uniform(0.88, 1.12, 3)
    return np.clip(1 + cue * (tint - 1), 0.15, None).astype(np.float32)


def _render(
    rng: np.random.Generator,
    coords: np.ndarray,
    class_id: int,
    camera: _Camera,
    cue: float = 1.0,
) -> np.ndarray:
    """One image as uint8 HxWx3: skin, lesion of the class, then the hospital's camera."""
    size = coords.shape[1]
    yy, xx = coords
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.92, 1.08)
    image = skin * (1 + 0.08 * _smooth_noise(rng, size, cells=4))[..., None]

    centre = size * (0.5 + rng.uniform(-0.12, 0.12, 2))
    radius = size * rng.uniform(0.17, 0.26)
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = xx - centre[0], yy - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    shape, texture = _look(class_id)
    inside = _shape_depth(rng, shape, u, v, radius)
    alpha = np.clip(inside / 1.5 + 0.5, 0, 1)[..., None]  # ~1.5 px soft edge

    # A stronger cue darkens the texture more (up to black at 2): the pattern stands out.
    darkening = np.minimum(cue * _texture(rng, texture, u, v, radius, size), 2.0)
    shade = _LESION_BROWN * _class_tint(class_id, cue) * rng.uniform(0.85, 1.1)
    lesion = shade * (1 - 0.5 * darkening)[..., None]
    image = image * (1 - alpha) + lesion * alpha
    return _apply_camera(rng, image, camera)


def _shape_depth(
    rng: np.random.Generator, shape: str, u: np.ndarray, v: np.ndarray, radius: float
) -> np.ndarray:
    """Approximate signed distance in pixels to the lesion border, positive inside."""
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    wobble = 1 + 0.06 * np.sin(2 * theta + rng.uniform(0, 2 * np.pi))  # no perfect circles
    if shape == "round":
        return radius * wobble - rho
    if shape == "star":
        spikes = int(rng.integers(5, 8))
        return radius * (0.8 + 0.35 * np.cos(spikes * theta)) * wobble - rho
    if shape == "elongated":
        major, minor = 1.5 * radius, 0.55 * radius
        return minor * (1 - np.hypot(u / major, v / minor))
    if shape == "ring":
        return np.minimum(radius * wobble - rho, rho - 0.55 * radius)
    if shape == "lobed":
        return radius * (0.85 + 0.25 * np.cos(3 * theta)) * wobble - rho
    if shape == "crescent":
        return np.minimum(radius * wobble - rho, np.hypot(u - 0.5 * radius, v) - 0.8 * radius)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(
    rng: np.random.Generator,
    texture: str,
    u: np.ndarray,
    v: np.ndarray,
    radius: float,
    size: int,
) -> np.ndarray:
    """How much each pixel of the lesion is darkened, in [0, 1]. Periods are tied to the
    image size, not the lesion, so texture frequency itself is a class cue."""
    period = size * rng.uniform(0.07, 0.09)
    if texture == "smooth":
        return 0.3 * np.clip(1 - np.hypot(u, v) / radius, 0, 1)  # darker centre
    if texture == "dotted":
        fu, fv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        return (fu**2 + fv**2 < 0.09).astype(np.float32)
    if texture == "striped":
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if texture == "mottled":
        return (_smooth_noise(rng, size, cells=max(4, size // 10)) > 0.3).astype(np.float32)
    if texture == "reticular":
        lines_u = np.abs(np.sin(np.pi * u / period)) < 0.3
        lines_v = np.abs(np.sin(np.pi * v / period)) < 0.3
        return (lines_u | lines_v).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise (about unit variance): a cells x cells random grid, upsampled."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    upsampled = Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(upsampled)


def _apply_camera(rng: np.random.Generator, image: np.ndarray, camera: _Camera) -> np.ndarray:
    mean = image.mean()
    image = ((image - mean) * camera.contrast + mean + camera.brightness) * camera.gain
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    if camera.blur > 0:
        blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(camera.blur))
        pixels = np.asarray(blurred)
    noisy = pixels + rng.normal(0, camera.noise, pixels.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
