"""FedMedCLIP core library: frozen CLIP backbone, feature adaptation module (FAM), private
masked heads, losses, update codec, aggregation, data readers, metrics and the simulator.

This package holds no web or database code; the services in ``services/`` build on it.
"""

from importlib.metadata import version

# One source of truth: pyproject.toml (the installed distribution's metadata).
__version__ = version("fedmedclip")
