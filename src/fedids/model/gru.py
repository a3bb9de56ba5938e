"""The GRU detector: a one-layer GRU over a host's window of flows and a linear multi-class head.

Plain PyTorch, no Flower: the same module trains centrally, on a federated client and under Opacus.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_HIDDEN = 64


class GRUDetector(nn.Module):
    """Classify the last flow of a window from the window's features.

    Input ``(batch, window, n_inputs)`` float32 (scaled features plus a presence channel), output
    ``(batch, n_classes)`` logits. With the defaults (78 features + 1, hidden 64) the GRU holds
    27,840 parameters: about 112 KB as float32.
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.n_inputs, self.n_classes, self.hidden = n_inputs, n_classes, hidden
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(windows)
        return self.head(out[:, -1, :])

    def step(self, flows: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One GRU step per host for streaming: ``flows`` ``(batch, n_inputs)``, ``hidden``
        ``(1, batch, hidden)`` or None. Returns logits ``(batch, n_classes)`` and the new hidden state."""
        out, h = self.gru(flows.unsqueeze(1), hidden)
        return self.head(out[:, -1, :]), h

    def config(self) -> dict:
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes, "hidden": self.hidden}
