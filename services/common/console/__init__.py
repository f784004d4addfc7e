"""The web console plumbing shared by the hub and the hospital node (see ``app``)."""
