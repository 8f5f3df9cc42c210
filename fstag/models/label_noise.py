"""Label-noise handling for rows whose label nobody checked (``manually_verified=0``).

``noise=prune`` (the 2018 winners' "drop the high-loss unverified clips", done online): every training
row's cross-entropy against its listed label is tracked as an exponential moving average over the epochs;
after ``warmup_epochs`` the ``drop_share`` of unverified rows with the highest average loss get weight 0
for the next epoch (verified rows are never dropped). A clip whose listed label is wrong keeps a high
loss once the model has learned the true classes, so it is the first to go; the choice is revised every
epoch. ``noise=none`` leaves the rows to ``data.use_unverified`` / ``data.unverified_weight``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

NOISE_METHODS = ("none", "prune")


class LossPruning:
    def __init__(self, cfg: Mapping[str, Any]):
        name = str(cfg.get("name", "prune"))
        if name not in NOISE_METHODS:
            raise ValueError(f"noise.name={name!r}: choose one of {NOISE_METHODS}")
        self.warmup_epochs = int(cfg.get("warmup_epochs", 5))
        self.drop_share = float(cfg.get("drop_share", 0.3))
        self.momentum = float(cfg.get("momentum", 0.7))
        self.loss = torch.zeros(0)
        self.seen = torch.zeros(0, dtype=torch.bool)
        self.unverified = torch.zeros(0, dtype=torch.bool)
        self.dropped = torch.zeros(0, dtype=torch.bool)

    def _grow(self, n: int) -> None:
        if n > len(self.loss):
            pad = n - len(self.loss)
            self.loss = torch.cat([self.loss, torch.zeros(pad)])
            self.seen = torch.cat([self.seen, torch.zeros(pad, dtype=torch.bool)])
            self.unverified = torch.cat([self.unverified, torch.zeros(pad, dtype=torch.bool)])
            self.dropped = torch.cat([self.dropped, torch.zeros(pad, dtype=torch.bool)])

    def keep(self, rows: torch.Tensor, verified: torch.Tensor) -> torch.Tensor:
        """A 0/1 weight per batch row: 0 for currently dropped rows."""
        r = rows.detach().long().cpu()
        self._grow(int(r.max()) + 1 if len(r) else 0)
        self.unverified[r] = ~verified.detach().bool().cpu()
        return (~self.dropped[r]).float().to(rows.device)

    def observe(self, rows: torch.Tensor, losses: torch.Tensor) -> None:
        r, l = rows.detach().long().cpu(), losses.detach().float().cpu()
        old = torch.where(self.seen[r], self.loss[r], l)
        self.loss[r] = self.momentum * old + (1 - self.momentum) * l
        self.seen[r] = True

    def update(self, epoch: int) -> int:
        """At the end of ``epoch`` (0-based): choose the rows to drop next epoch; returns their count."""
        self.dropped[:] = False
        candidates = (self.unverified & self.seen).nonzero().flatten()
        if epoch + 1 < self.warmup_epochs or not len(candidates):
            return 0
        n_drop = int(round(self.drop_share * len(candidates)))
        if n_drop:
            worst = candidates[torch.argsort(self.loss[candidates], descending=True)[:n_drop]]
            self.dropped[worst] = True
        return n_drop
