"""The GRU detector: a one-layer GRU over a host's window of flows, a linear multi-class head and, once
trained, a prototype head beside it.

Plain PyTorch, no Flower: the same module trains centrally, on a federated client and under DP-SGD.

The prototype head (nearest class mean, "prototypical" read-out) holds each class's mean GRU embedding
over its training windows; a window's prototype probabilities are the softmax of its cosine similarity to
each class mean over :data:`PROTOTYPE_TEMPERATURE`. In evaluation mode a detector with prototypes is
*gated*: P(BENIGN) (class 0) is the linear head's, and the attack mass ``1 - P(BENIGN)`` is shared out
in the proportions of the mix ``(1 - w) softmax(linear) + w softmax(prototype)`` over the attack classes
(``w`` = :data:`PROTOTYPE_WEIGHT`). The output is the log of that distribution, so every consumer of
logits (argmax, alert scores, ONNX export, streaming) reads it unchanged. Why: a class seen in a handful
of windows gets a usable mean long before the linear head learns its row (docs/rare-classes.md: +0.11 to
+0.37 macro-F1 at k = 10 and 20 training flows per attack on the real samples, no retraining), while the
alert score, and so the false alarms at a threshold, stay exactly the linear head's (an ungated mix moved
them: docs/rare-classes.md). In training mode the output is the linear head's logits: prototypes are a
read-out fitted after training, never trained through.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_HIDDEN = 64
PROTOTYPE_TEMPERATURE = 0.1  # cosine similarity is in [-1, 1]; 0.1 makes the nearest mean dominate
PROTOTYPE_WEIGHT = 0.5  # share of the prototype head in the mixed probabilities
_ABSENT = -1e4  # similarity offset of a class without a prototype: exp() underflows to 0


class GRUDetector(nn.Module):
    """Classify the last flow of a window from the window's features.

    Input ``(batch, window, n_inputs)`` float32 (scaled features plus a presence channel), output
    ``(batch, n_classes)`` logits (log mixed probabilities once prototypes are set, in eval mode). With
    the defaults (78 features + 1, hidden 64) the GRU holds 27,840 parameters: about 112 KB as float32.
    The prototypes are buffers outside the ``state_dict`` (they are not weights to average or train):
    :mod:`fedids.model.artifacts` stores them beside the weights.
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.n_inputs, self.n_classes, self.hidden = n_inputs, n_classes, hidden
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)
        self.register_buffer("prototypes", torch.zeros(0, hidden), persistent=False)
        self.register_buffer("prototype_offset", torch.zeros(0), persistent=False)

    @property
    def has_prototypes(self) -> bool:
        return self.prototypes.shape[0] > 0

    def set_prototypes(
        self, means: torch.Tensor | None, present: torch.Tensor | None = None, *, unit: bool = False
    ) -> None:
        """Set the class means ``(n_classes, hidden)`` (rows of classes not ``present`` are ignored), or
        remove the prototype head with None. At least one class must be present. ``unit``: the rows are
        already the stored unit vectors (a reloaded model scores bit for bit as the saved one)."""
        if means is None:
            self.prototypes = torch.zeros(0, self.hidden)
            self.prototype_offset = torch.zeros(0)
            return
        means = torch.as_tensor(means, dtype=torch.float32)
        if tuple(means.shape) != (self.n_classes, self.hidden) or not torch.isfinite(means).all():
            raise ValueError(f"prototypes must be finite, shape ({self.n_classes}, {self.hidden})")
        present = torch.ones(self.n_classes, dtype=torch.bool) if present is None else present.bool()
        present = present & (means.norm(dim=1) > 0)
        if not present.any():
            raise ValueError("prototypes: no class has a mean")
        means = torch.where(present[:, None], means, 0.0)
        self.prototypes = means if unit else F.normalize(means, dim=1)
        self.prototype_offset = torch.where(present, 0.0, _ABSENT)

    def read_out(self, embedding: torch.Tensor) -> torch.Tensor:
        """The heads on embeddings ``(batch, hidden)`` (from :meth:`embed`): what :meth:`forward` returns."""
        logits = self.head(embedding)
        if self.training or not self.has_prototypes:
            return logits
        sim = F.normalize(embedding, dim=1) @ self.prototypes.T / PROTOTYPE_TEMPERATURE
        linear = torch.softmax(logits, 1)
        mixed = (1.0 - PROTOTYPE_WEIGHT) * linear + PROTOTYPE_WEIGHT * torch.softmax(
            sim + self.prototype_offset, 1
        )
        attacks = mixed[:, 1:] / mixed[:, 1:].sum(1, keepdim=True).clamp_min(1e-30)
        gated = torch.cat([linear[:, :1], (1.0 - linear[:, :1]) * attacks], 1)
        return gated.clamp_min(1e-30).log()

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """The GRU's last hidden state ``(batch, hidden)``: what both heads read."""
        out, _ = self.gru(windows)
        return out[:, -1, :]

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.read_out(self.embed(windows))

    def step(self, flows: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One GRU step per host for streaming: ``flows`` ``(batch, n_inputs)``, ``hidden``
        ``(1, batch, hidden)`` or None. Returns logits ``(batch, n_classes)`` and the new hidden state."""
        out, h = self.gru(flows.unsqueeze(1), hidden)
        return self.read_out(out[:, -1, :]), h

    def config(self) -> dict:
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes, "hidden": self.hidden}
