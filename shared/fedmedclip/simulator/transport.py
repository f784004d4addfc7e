"""What crosses the network in a simulated round, and how many bytes it costs.

FedMedCLIP-style methods go through the real update codec (``encode_update`` then
``decode_update`` with the same validation the hub applies), so the simulator measures
the accuracy cost of quantisation and the exact bytes a node would upload. Downloads are
counted as the hub serves them: the full global state as a safetensors model blob.

FedAvg sends every trained weight as float32 both ways, which is what the paper's FedAvg
baseline does and what its communication figures count.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedmedclip.codec import decode_update, encode_update
from fedmedclip.enums import SimulationCodec, parse_choice
from fedmedclip.model_store import encode_blob

State = Mapping[str, torch.Tensor]

FP32_BYTES = 4


def fp32_bytes(state: State) -> int:
    """Size of ``state`` sent as raw float32 numbers."""
    return sum(t.numel() for t in state.values()) * FP32_BYTES


class CodecTransport:
    """Adapter deltas through the update codec; downloads as the hub's model blob.

    With ``error_feedback`` each site keeps what quantisation lost from its update (the
    residual) and adds it to its next delta, so the error does not accumulate over rounds
    (the usual remedy for coarse quantisation such as int4). Nothing changes on the wire.
    """

    def __init__(
        self,
        codec: SimulationCodec | str,
        expected_shapes: Mapping[str, tuple[int, ...]],
        *,
        error_feedback: bool = False,
    ) -> None:
        self.codec = parse_choice(SimulationCodec, codec, "codec")
        self.expected_shapes = dict(expected_shapes)
        self.error_feedback = error_feedback and self.codec != SimulationCodec.none
        self._residuals: dict[int, dict[str, torch.Tensor]] = {}

    def upload(
        self,
        delta: State,
        *,
        site: int,
        base_version: int,
        omit_rows: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], int]:
        """The delta as the hub would decode it, and the bytes on the wire."""
        if self.codec == SimulationCodec.none:
            return {k: v.detach().float().clone() for k, v in delta.items()}, fp32_bytes(delta)
        residual = self._residuals.get(site)
        if residual is not None:
            delta = {k: v + residual[k] for k, v in delta.items()}
        payload = encode_update(
            delta, base_version=base_version, quantization=self.codec, omit_rows=omit_rows
        )
        decoded = decode_update(
            payload, expected_shapes=self.expected_shapes, base_version=base_version
        ).delta
        if self.error_feedback:
            self._residuals[site] = {k: delta[k] - decoded[k] for k in delta}
        return decoded, len(payload)

    def download_bytes(self, state: State, version: int) -> int:
        """Bytes of the global model blob a node pulls at the start of a round."""
        return len(encode_blob(state, {"version": version}))


class Fp32Transport:
    """Full float32 weights both ways (FedAvg)."""

    def upload(
        self,
        delta: State,
        *,
        site: int,
        base_version: int,
        omit_rows: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Exact delta; the bytes are those of the full trained weights in float32.

        Aggregating deltas or full weights gives the same weighted mean, so the delta is
        passed on while the cost counted is that of sending the weights themselves.
        """
        del site, base_version, omit_rows  # FedAvg sends whole weights, nothing omitted
        return {k: v.detach().float().clone() for k, v in delta.items()}, fp32_bytes(delta)

    def download_bytes(self, state: State, version: int) -> int:
        del version
        return fp32_bytes(state)
