"""Options of one ``fedmedclip demo`` run, each declared once.

The fields declared with :func:`~fedmedclip.config_fields.setting` are the command's options
(:mod:`services.commands.options`); the others are the demo's preset. The module imports
nothing heavy, so ``fedmedclip --help`` builds the options without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedmedclip.config_fields import check_minimums, setting


@dataclass(frozen=True)
class DemoConfig:
    """Options of one demo run.

    The synthetic preset (``alpha``, ``domain_shift``, ``class_cue``) and the training
    settings were chosen by measuring random ViT-S-32 features: with the generator's
    defaults (alpha 0.5, full camera shift, mild class cues) sites hold one or two classes
    and predict the majority class; with this preset every site holds every class, a
    linear probe on the features reaches about 0.8, and five local epochs per round at
    lr 3e-3 leave room to improve from round to round.
    """

    rounds: int = setting(3, "Federated rounds.", minimum=1)
    hospitals: int = setting(3, "Simulated hospitals.", minimum=1)
    classes: int = 4
    per_hospital: int = 160
    alpha: float = 5.0  # Dirichlet label skew: moderate, every site has every class
    domain_shift: float = 0.3  # a third of the default per-hospital camera shift
    class_cue: float = 5.0  # class tints and textures five times as distinct
    local_epochs: int = 5
    lr: float = 3e-3
    held_out_per_class: int = 8
    backbone: str = setting("ViT-S-32", "open_clip architecture.")
    pretrained: str = setting("none", "open_clip tag, checkpoint path, or none.")
    out: Path = setting(Path("demo-out"), "Working folder of the demo.", flag="--out")
    redis_url: str = setting("", "Redis URL for real Celery workers (empty: eager).")
    seed: int = 0
    secure_aggregation: bool = setting(
        False, "Secure rounds: the hub learns only the sum of the updates (3+ hospitals)."
    )

    def __post_init__(self) -> None:
        check_minimums(self)
