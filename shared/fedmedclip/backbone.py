"""The frozen CLIP backbone: open_clip model by name, with weights from a tag, a file or none.

Weights are described by ``pretrained``:

* ``none`` (or empty): random initialisation, seeded so that every site and service builds
  the same network. Only useful for tests and demos; a warning says so.
* a path to a local checkpoint (``.safetensors`` or a ``.pt``/``.pth``/``.bin`` state dict):
  the offline way to bring real CLIP weights.
* anything else is an open_clip pretrained tag (such as ``laion2b_s34b_b79k``), which needs
  a reachable model hub.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch.nn import functional as F

from fedmedclip.data.images import (
    DEFAULT_MAX_PIXELS,
    check_aspect_ratio,
    decode_image,
    reduction_factor,
)
from fedmedclip.files import sha256_file
from fedmedclip.weights_notice import RANDOM_WEIGHTS_WARNING, random_weights_level

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
REDUCING_GAP = 3
"""Images are box-reduced to no less than this many times the model's input side before
the final bicubic resize. Pillow's own ``reducing_gap`` documentation calls 3 indistinguishable
from a direct resize, and it bounds the work: a 7000 x 7000 image is resized from 700 x 700."""


class BackboneError(RuntimeError):
    """The backbone could not be built or its weights could not be loaded."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where the backbone weights come from: ``random``, ``tag`` or ``path``."""

    kind: str
    value: str | None = None

    @classmethod
    def parse(cls, pretrained: str | None) -> WeightsSpec:
        text = (pretrained or "").strip()
        if text.lower() in ("", "none", "random"):
            return cls("random")
        if Path(text).suffix in CHECKPOINT_SUFFIXES or "/" in text or Path(text).exists():
            return cls("path", text)
        return cls("tag", text)

    def describe(self) -> str:
        """Human-readable: ``random``, ``tag:<tag>`` or ``path:<path>``."""
        return self.kind if self.kind == "random" else f"{self.kind}:{self.value}"


def embedding_dim(name: str) -> int:
    """Embedding dimension of an open_clip architecture, without building it."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise BackboneError(f"unknown open_clip model {name!r}")
    return int(config["embed_dim"])


def input_side(name: str) -> int:
    """The shorter side of the model's input images (224 unless its config says otherwise)."""
    config = open_clip.get_model_config(name) or {}
    size = config.get("vision_cfg", {}).get("image_size", 224)
    return size if isinstance(size, int) else min(int(side) for side in size)


def _load_checkpoint(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise BackboneError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is reported the same way
        raise BackboneError(f"could not read checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"checkpoint {path} does not fit this architecture: {exc}") from exc


class Backbone:
    """A frozen open_clip model with its preprocessing and a stable identity.

    ``id`` names architecture + weights; ``preprocess_id`` names the image preprocessing.
    Both go into feature-cache keys, so a cache never mixes embeddings of different models.
    """

    def __init__(
        self,
        name: str,
        pretrained: str | None = None,
        device: str = "cpu",
        *,
        warn_random: bool = True,
    ) -> None:
        self.name = name
        self.weights = WeightsSpec.parse(pretrained)
        self.device = torch.device(device)
        self.encoded_images = 0  # how many images went through the image encoder
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            try:
                tag = self.weights.value if self.weights.kind == "tag" else None
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
            except Exception as exc:
                if self.weights.kind == "tag":
                    raise BackboneError(
                        f"could not fetch pretrained weights {tag!r} for {name}: {exc}. "
                        "Without a reachable model hub, download the checkpoint elsewhere and "
                        "pass its local path (.safetensors or .pt state dict) as pretrained."
                    ) from exc
                raise BackboneError(f"could not build open_clip model {name!r}: {exc}") from exc
        weights_id = "random-seed0"
        if self.weights.kind == "path":
            path = Path(self.weights.value or "")
            _load_checkpoint(model, path)
            weights_id = f"sha256-{sha256_file(path)[:16]}"
        elif self.weights.kind == "tag":
            weights_id = f"tag-{self.weights.value}"
        else:
            log.log(random_weights_level(warn_random), RANDOM_WEIGHTS_WARNING)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.preprocess = preprocess
        self.image_size = input_side(name)
        self.decode_side = REDUCING_GAP * self.image_size
        self.tokenizer = open_clip.get_tokenizer(name)
        self.dim = embedding_dim(name)
        self.id = f"{name}/{weights_id}"
        self.preprocess_id = hashlib.sha256(repr(preprocess).encode()).hexdigest()[:16]

    @property
    def is_random(self) -> bool:
        return self.weights.kind == "random"

    @torch.no_grad()
    def encode_tensors(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of a preprocessed batch (N x 3 x H x W), on CPU."""
        self.encoded_images += len(pixels)
        features = self.model.encode_image(pixels.to(self.device))
        return F.normalize(features.float(), dim=-1).cpu()

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The model's input (3 x H x W) for one image, in bounded memory and time.

        open_clip's preprocessing resizes the shorter side to ``image_size`` and crops the
        centre: on a 10000 x 1 strip that resize alone would build a 224 x 2,240,000 image,
        and on a 7000 x 7000 one it filters 49 M pixels. So images thinner than the aspect
        cap are refused (ImageDecodeError) and large ones are box-reduced to about
        ``decode_side`` first. Images already that small (every image decoded with
        ``min_side=decode_side``) go through the unchanged preprocessing.
        """
        check_aspect_ratio(image.width, image.height)
        factor = reduction_factor(image.width, image.height, self.decode_side)
        if factor > 1:
            image = image.convert("RGB").reduce(factor)
        return self.preprocess(image)

    def prepare_bytes(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        """Decode untrusted image bytes (ImageDecodeError if unusable) into the model's input."""
        return self.prepare(decode_image(data, max_pixels=max_pixels, min_side=self.decode_side))

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised embeddings of PIL images."""
        if not images:
            return torch.empty(0, self.dim)
        return self.encode_tensors(torch.stack([self.prepare(im) for im in images]))

    @torch.no_grad()
    def text_prototypes(self, class_names: Sequence[str], template: str) -> torch.Tensor:
        """L2-normalised text embeddings (C x D) of ``template`` filled with each class name."""
        prompts = [template.format(name.replace("_", " ")) for name in class_names]
        tokens = self.tokenizer(prompts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()


def load_backbone(
    name: str = "ViT-S-32",
    pretrained: str | None = None,
    device: str = "cpu",
    *,
    warn_random: bool = True,
) -> Backbone:
    """Build a frozen backbone; see the module docstring for ``pretrained``.

    Random weights are logged as a warning; a caller that shows the user its own, more
    visible warning passes ``warn_random=False`` (the message is then logged at INFO).
    """
    return Backbone(name, pretrained, device, warn_random=warn_random)


_cache_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _cached(name: str, pretrained: str | None, device: str) -> Backbone:
    log.info("loading backbone %s (weights %s) on %s", name, pretrained, device)
    return load_backbone(name, pretrained, device)


def cached_backbone(name: str, pretrained: str | None, device: str) -> Backbone:
    """The frozen backbone for these arguments, built once per process and then shared.

    It takes seconds to build and hundreds of MB to hold and is never modified, so every
    job, app and model in a process (several apps share one in tests and the demo) uses
    the same instance. The lock makes concurrent first calls build it only once; the two
    most recently used backbones are kept. A build that fails is not cached.
    """
    with _cache_lock:
        return _cached(name, pretrained, device)


def resolve_device(setting: str = "auto") -> str:
    """``auto`` picks CUDA when it is available, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting
