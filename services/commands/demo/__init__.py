"""``fedmedclip demo``: a small federation end to end on this machine.

``command`` is the Typer command (its options come from ``config``); ``run`` starts the
services as child processes (``processes``) and drives them over HTTP; ``view`` is what the
user reads while it runs.
"""
