"""The FedAvg baseline: fine-tune the last blocks of the CLIP image encoder, average weights.

What is trained: the last ``fedavg_blocks`` transformer blocks of the vision tower (2 of
12 for ViT-S-32 and ViT-B-32 by default), its final LayerNorm (``ln_post``) and projection
(``proj``), and a linear classifier over the L2-normalised embedding, initialised from the
text prototypes (the usual zero-shot initialisation for fine-tuning CLIP). The encoder
weights learn at ``fedavg_lr`` (a transformer needs small steps), the classifier at the
adapter methods' ``lr`` (at ``fedavg_lr`` its unit-norm rows would barely move). Everything
trained is averaged by sample count and counted as float32 both ways.

Images are decoded and preprocessed once per site. With ``fedavg_prefix_cache`` the
output of the frozen blocks is computed once too, which gives exactly the same numbers
(there is no augmentation) at a fraction of the cost; without it every step runs the whole
encoder forward, as a deployment must when it augments images. ``bench/round_cost.py``
times both.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fedmedclip.data.images import read_image_bytes
from fedmedclip.enums import SimulationMethod
from fedmedclip.model import LOGIT_SCALE
from fedmedclip.simulator.base import LocalUpdate, Method, State, local_seed
from fedmedclip.simulator.config import SimulationConfig
from fedmedclip.simulator.federation import SPLITS, Federation
from fedmedclip.simulator.transport import Fp32Transport

EVAL_BATCH = 64


class FineTunedEncoder(nn.Module):
    """A CLIP vision transformer split into a frozen prefix and a trained suffix + classifier."""

    def __init__(self, visual: nn.Module, blocks: int, prototypes: torch.Tensor) -> None:
        super().__init__()
        required = ("_embeds", "_pool", "transformer", "proj", "ln_post")
        if not all(hasattr(visual, attr) for attr in required):
            raise ValueError("encoder fine-tuning supports open_clip VisionTransformer backbones")
        resblocks = visual.transformer.resblocks
        if not 1 <= blocks <= len(resblocks):
            raise ValueError(f"fedavg_blocks must be between 1 and {len(resblocks)}")
        if not getattr(visual.transformer, "batch_first", True):
            raise ValueError("encoder fine-tuning needs a batch-first transformer")
        self.visual = copy.deepcopy(visual).float().requires_grad_(False)
        self.frozen = list(self.visual.transformer.resblocks)[: len(resblocks) - blocks]
        self.tuned = list(self.visual.transformer.resblocks)[-blocks:]
        for module in (*self.tuned, self.visual.ln_post):
            module.requires_grad_(True)
        self.visual.proj.requires_grad_(True)
        self.classifier = nn.Parameter(F.normalize(prototypes.float(), dim=-1).clone())

    @torch.no_grad()
    def prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens entering the first trained block (frozen, so computed without a graph)."""
        x = self.visual._embeds(pixels)
        for block in self.frozen:
            x = block(x)
        return x

    def suffix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits from the prefix tokens."""
        x = tokens
        for block in self.tuned:
            x = block(x)
        pooled, _ = self.visual._pool(x)
        embedding = F.normalize(pooled @ self.visual.proj, dim=-1)
        return LOGIT_SCALE * embedding @ F.normalize(self.classifier, dim=-1).T

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The trained encoder weights (everything trained except the classifier)."""
        return [p for p in self.parameters() if p.requires_grad and p is not self.classifier]

    def trained_state(self) -> State:
        """Every trained tensor, by name: what FedAvg exchanges."""
        return {k: p.detach().cpu().clone() for k, p in self.named_parameters() if p.requires_grad}

    def load_trained_state(self, state: State) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)


class EncoderFedAvg(Method):
    """FedAvg over the last encoder blocks + classifier (see the module docstring)."""

    name = SimulationMethod.fedavg
    federated = True
    # Its updates take the same upload path, so noising them would be one line; but the one
    # clip norm of a run is chosen for the FAM delta, a wrong scale for encoder weights, and
    # the figure would mislead. Refused rather than applied with a meaningless bound.
    dp_supported = False

    def __init__(self, federation: Federation, config: SimulationConfig) -> None:
        super().__init__(federation, config)
        self.device = torch.device(config.device)
        self.model = FineTunedEncoder(
            federation.backbone.model.visual, config.fedavg_blocks, federation.text_prototypes
        ).to(self.device)
        self._global = self.model.trained_state()
        self.transport = Fp32Transport()
        # inputs[site][split]: preprocessed pixels, or prefix tokens with the prefix cache
        self.inputs = [
            {split: self._inputs(site.split(split).paths) for split in SPLITS}
            for site in federation.sites
        ]

    def options(self) -> dict:
        return {
            "trained": f"last {self.config.fedavg_blocks} vision blocks + ln_post + proj "
            "+ linear classifier",
            "trained_parameters": sum(t.numel() for t in self._global.values()),
            "prefix_cache": self.config.fedavg_prefix_cache,
            "calibrate": self.config.calibrate,
        }

    def learning_rate(self) -> float:
        return self.config.fedavg_lr

    def _inputs(self, paths: list[Path]) -> torch.Tensor:
        backbone = self.federation.backbone
        pixels = torch.stack([backbone.prepare_bytes(read_image_bytes(p)) for p in paths])
        if not self.config.fedavg_prefix_cache:
            return pixels
        return torch.cat(
            [self.model.prefix(chunk.to(self.device)).cpu() for chunk in pixels.split(EVAL_BATCH)]
        )

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(self.device)
        tokens = inputs if self.config.fedavg_prefix_cache else self.model.prefix(inputs)
        return self.model.suffix(tokens)

    def global_state(self) -> State:
        return self._global

    def set_global(self, state: State) -> None:
        self._global = {k: v.detach().cpu().clone() for k, v in state.items()}

    def train_site(self, site_index: int, round_index: int) -> LocalUpdate:
        config = self.config
        self.model.load_trained_state(self._global)
        self.model.train()
        optimiser = torch.optim.AdamW(
            [
                {"params": self.model.encoder_parameters(), "lr": config.fedavg_lr},
                {"params": [self.model.classifier], "lr": config.lr},
            ],
            weight_decay=1e-4,
        )
        inputs = self.inputs[site_index]["train"]
        labels = self.federation.sites[site_index].train.labels.to(self.device)
        generator = torch.Generator().manual_seed(local_seed(config.seed, round_index, site_index))
        for _ in range(config.local_epochs):
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(order), config.fedavg_batch_size):
                idx = order[start : start + config.fedavg_batch_size]
                loss = F.cross_entropy(self._logits(inputs[idx]), labels[idx.to(self.device)])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        self.model.eval()
        return LocalUpdate(self.model.trained_state(), len(labels))

    def predict(self, site_index: int, split: str) -> torch.Tensor:
        self.model.load_trained_state(self._global)
        self.model.eval()

        @torch.no_grad()
        def logits(split_name: str) -> torch.Tensor:
            inputs = self.inputs[site_index][split_name]
            return torch.cat([self._logits(chunk).cpu() for chunk in inputs.split(EVAL_BATCH)])

        return self._calibrated(logits, site_index, split)
