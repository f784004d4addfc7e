"""The defaults of a site's local round, declared once for the hub, the node and the
simulator: its hyper-parameters, the class prompt, and the shares of the site's images held
out for validation and testing.

The hub sends them as a round's :class:`~fedmedclip.schemas.TrainingHints` (the prompt as
the task's, :class:`~fedmedclip.schemas.TaskSpec`), the node turns the hints into a
:class:`~fedmedclip.training.TrainConfig` and splits its data with the shares, and
``fedmedclip simulate`` offers them as options; all name these constants, so the simulator
measures what a hospital runs by default. The module imports nothing, so the wire schemas
and the command's ``--help`` do not load torch.
"""

LOCAL_EPOCHS = 5
LR = 1e-3
"""One AdamW step size for the FAM and the head (``docs/method.md`` compares the paper's)."""
BATCH_SIZE = 64
KD_WEIGHT = 0.04
"""Lambda of the adaptive KL distillation, as in the paper."""
KD_TEMPERATURE = 2.0
"""T of the distillation, as in the paper."""
ADAPTIVE_KD = True
"""Weight the two KL directions by the entropies of the two predictions."""
CALIBRATE = False
"""Fit each branch's temperature on the validation split before the entropy weighting."""
PROMPT_TEMPLATE = "a picture of a {}."
"""The class prompt whose text embeddings start the class prototypes (the paper's)."""
VAL_FRACTION = 0.15
"""Share of a site's images held out for validation (the combination is chosen on them)."""
TEST_FRACTION = 0.2
"""Share of a site's images held out for testing."""
PRUNE_WEIGHT = 0.1
"""Pruning pressure on the row thresholds: prunes about an eighth of the FAM's rows over ten
rounds at no measurable accuracy cost; ten times more prunes four fifths and costs points
(bench/README.md, Update bytes)."""
