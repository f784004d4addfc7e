"""How hard local training pushes the masked layers to drop rows.

A constant of its own, apart from :mod:`fedmedclip.training`, so that the wire schemas and
the simulator's config (which ``fedmedclip simulate`` reads to build its options) name the
same default without loading torch.
"""

DEFAULT_PRUNE_WEIGHT = 0.1
"""Pruning pressure on the row thresholds: prunes about an eighth of the FAM's rows over ten
rounds at no measurable accuracy cost; ten times more prunes four fifths and costs points
(bench/README.md, Update bytes)."""
