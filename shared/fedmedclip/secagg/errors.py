"""Why a secure-aggregation message or round was refused."""


class SecAggError(Exception):
    """Base class: something in the protocol went wrong."""


class ProtocolViolation(SecAggError):
    """A message that must be refused: wrong round (replay), wrong phase, unknown or repeated
    sender, or contents that contradict what the hub announced. The round itself goes on."""


class RoundFailed(SecAggError):
    """The round cannot publish an aggregate (too few sites left, or a secret that cannot be
    rebuilt); ``reason`` says which, and nothing about any site's update is revealed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
