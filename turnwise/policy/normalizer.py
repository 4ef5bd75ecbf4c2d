"""Observation normalization that keeps up with drift in the observation distribution."""

from __future__ import annotations

import torch
from torch import nn


class WindowNormalizer(nn.Module):
    """Running mean and variance whose memory is about ``window`` observations.

    Until ``window`` observations have been seen it is the exact running average;
    after that each batch of ``n`` enters with weight ``n / (n + window)``, an
    exponential moving average, so statistics follow a drifting distribution
    (Warehouse-v0's persistent inventory, say). The state lives in buffers, so it
    is saved in checkpoints and shipped to rollout actors with the weights.
    """

    def __init__(self, size: int, window: int, clip: float = 10.0, enabled: bool = True):
        super().__init__()
        self.window, self.clip, self.enabled = window, clip, enabled
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        if not self.enabled or len(batch) == 0:
            return
        n = float(len(batch))
        weight = n / (n + min(float(self.count), float(self.window)))
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, unbiased=False)
        delta = batch_mean - self.mean
        self.mean += weight * delta
        self.var.copy_(
            (1 - weight) * self.var + weight * batch_var + weight * (1 - weight) * delta**2
        )
        self.count += n

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        normalized = (obs - self.mean) / torch.sqrt(self.var + 1e-8)
        return normalized.clamp(-self.clip, self.clip)
