"""FedMedCLIP services (aggregator, hospital node, inference API) and the ``fedmedclip`` command.

Each service imports the core library ``fedmedclip`` and never another service.
"""
