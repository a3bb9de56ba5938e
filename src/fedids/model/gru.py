"""The GRU detector: a one-layer GRU over a host's window of flows, a linear multi-class head and, once
trained, a prototype head beside it.

Plain PyTorch, no Flower: the same module trains centrally, on a federated client and under DP-SGD.

The prototype head compares a window's GRU embedding with each class's mean embedding over its training
flows' head windows (:func:`fedids.task.head_windows`: windows that start with the attack) under one
shared, shrunk covariance (a Mahalanobis distance: linear discriminant analysis with equal class priors,
fitted in closed form from class moments by :mod:`fedids.model.discriminant`). Its scores are linear in
the embedding, ``prototypes @ x + prototype_offset``. In evaluation mode a detector with prototypes mixes
``(1 - w) softmax(linear) + w softmax(prototype scores)`` (``w`` = :data:`PROTOTYPE_WEIGHT`) and is
*gated* (the default, ``fedids train`` and ``fedids federate``): P(BENIGN) (class 0) is the linear
head's, and the attack mass ``1 - P(BENIGN)`` is shared out over the attack classes in the mix's
proportions. The output is the log of that distribution, so every consumer of logits (argmax, alert
scores, ONNX export, streaming) reads it unchanged. Why: a class seen in a handful of windows gets a
usable mean long before the linear head learns its row (docs/rare-classes.md, session 26: 0.435 / 0.582
-> 0.654 / 0.977 macro-F1 at k = 10 / 20 training flows per attack on the real samples, the linear head
alone against the gated mix), while the alert score, and so the false alarms at a threshold, stay
exactly the linear head's: the head says which attack, never whether (the federated threshold is chosen
from the clients' histograms of the linear head's score). Ungated (``gated=False``) the mix also sets
P(BENIGN): on the rare protocol about the same (federated, session 25: real 0.473 / 0.789 against 0.468 /
0.785), on the full synthetic default more top-class false alarms (federated: 38.7 against 24.0 per
1,000 benign flows). Until session 24 the head was cosine similarity to the class means. In training
mode the output is the linear head's logits: prototypes are a read-out fitted after training, never
trained through.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedids.model.discriminant import has_mean

DEFAULT_HIDDEN = 64
PROTOTYPE_WEIGHT = 0.5  # share of the prototype head in the mixed probabilities


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
        self.prototype_gated = False

    @property
    def has_prototypes(self) -> bool:
        return self.prototypes.shape[0] > 0

    def set_prototypes(
        self,
        weights: torch.Tensor | np.ndarray | None,
        offsets: torch.Tensor | np.ndarray | None = None,
        *,
        gated: bool = True,
    ) -> None:
        """Set the prototype head's ``weights (n_classes, hidden)`` and ``offsets (n_classes,)`` (from
        :func:`fedids.model.discriminant.gaussian_discriminant`; a class without windows has offset
        :data:`~fedids.model.discriminant.ABSENT_OFFSET`), or remove the head with None. ``gated``:
        P(BENIGN) stays the linear head's (see the module docstring)."""
        self.prototype_gated = bool(gated) and weights is not None
        if weights is None:
            self.prototypes = torch.zeros(0, self.hidden)
            self.prototype_offset = torch.zeros(0)
            return
        weights = torch.as_tensor(weights, dtype=torch.float32)
        offsets = torch.as_tensor(offsets, dtype=torch.float32)
        if tuple(weights.shape) != (self.n_classes, self.hidden) or tuple(offsets.shape) != (self.n_classes,):
            raise ValueError(
                f"prototypes must have shapes ({self.n_classes}, {self.hidden}) and ({self.n_classes},)"
            )
        if not (torch.isfinite(weights).all() and torch.isfinite(offsets).all()):
            raise ValueError("prototypes must be finite")
        if not has_mean(offsets).any():
            raise ValueError("prototypes: no class has a mean")
        self.prototypes, self.prototype_offset = weights.contiguous(), offsets.contiguous()

    def read_out(self, embedding: torch.Tensor) -> torch.Tensor:
        """The heads on embeddings ``(batch, hidden)`` (from :meth:`embed`): what :meth:`forward` returns."""
        logits = self.head(embedding)
        if self.training or not self.has_prototypes:
            return logits
        scores = embedding @ self.prototypes.T + self.prototype_offset
        linear = torch.softmax(logits, 1)
        mixed = (1.0 - PROTOTYPE_WEIGHT) * linear + PROTOTYPE_WEIGHT * torch.softmax(scores, 1)
        if self.prototype_gated:
            attacks = mixed[:, 1:] / mixed[:, 1:].sum(1, keepdim=True).clamp_min(1e-30)
            mixed = torch.cat([linear[:, :1], (1.0 - linear[:, :1]) * attacks], 1)
        return mixed.clamp_min(1e-30).log()

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
