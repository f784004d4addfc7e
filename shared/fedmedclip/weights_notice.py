"""The warning that CLIP weights are random, and how a process learns it was already shown.

Apart from :mod:`fedmedclip.backbone` (which imports torch and open_clip) so that light
processes, such as the parent process of ``fedmedclip demo``, can use it.
"""

from __future__ import annotations

import logging
import os

RANDOM_WEIGHTS_WARNING = (
    "CLIP weights are RANDOM (pretrained=none): embeddings carry no pretrained knowledge; "
    "use this only to test the platform. Pass an open_clip tag or a local checkpoint path."
)
RANDOM_WEIGHTS_ANNOUNCED_ENV = "FEDMEDCLIP_RANDOM_WEIGHTS_ANNOUNCED"
"""Set to ``1`` by a parent process that shows the user which weights are used (the demo,
in its header); the processes it starts then log the warning at INFO level only, so the
user reads it once and not once per process."""


def random_weights_level(warn: bool = True) -> int:
    """Logging level of :data:`RANDOM_WEIGHTS_WARNING`: WARNING, unless the caller shows its
    own warning (``warn=False``) or a parent process announced it (the variable above)."""
    announced = os.environ.get(RANDOM_WEIGHTS_ANNOUNCED_ENV) == "1"
    return logging.WARNING if warn and not announced else logging.INFO
