"""FedMedCLIP core library: frozen CLIP backbone, feature adaptation module (FAM), private
masked heads, losses, update codec, aggregation, data readers, metrics and the simulator.

This package holds no web or database code; the services in ``services/`` build on it.
"""

__version__ = "0.1.0"
