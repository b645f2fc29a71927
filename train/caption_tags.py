"""``init``'s caption-token classification: the vision tower's stand-in for pretraining.

The paper starts from a pretrained CLIP encoder that already tells objects apart; ``init`` trains
its tower from scratch, and next-token loss alone taught it the verb but never the held object
(measured on the tiny preset: held-out object accuracy at the random-guess level after every
stage). So ``init`` adds the objective of SuperClass (Huang et al., NeurIPS 2024, "Classification
Done Right for Vision-Language Pre-Training"): from the clip's pooled features, a linear head
predicts which tokens its caption contains. Targets are the caption's token ids, each weighted by
its inverse document frequency over the stage's captions (tokens in every caption, such as the
template's "I am", weigh zero), normalised to a distribution; the loss is its cross-entropy with
the head's softmax. It needs no parsing, so it works as is on real Ego-Exo4D descriptions.
Measured on the tiny preset: the held object named with its colour went from 5% of held-out
clips without it to 19-22% over three training seeds with it (chance 11%); its kind is still not
learned by a random tower. The egosim-tiny config now starts from a tower pretrained on the
simulator's object labels instead (tower_pretrain.py; benchmarks/results/training_egosim_tiny.md).

The head lives on the stage's loss module, not on the model: it trains with the tower during
``init`` (checkpointed and resumed with it) and is dropped with the stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import nn


def multi_hot(captions: list[list[int]], vocab_size: int, device: torch.device | None = None) -> torch.Tensor:
    """(len(captions), vocab_size): 1 where a caption contains the token id, else 0."""
    hot = torch.zeros(len(captions), vocab_size, device=device)
    for row, ids in enumerate(captions):
        hot[row, torch.tensor(ids, dtype=torch.long, device=device)] = 1.0
    return hot


def token_idf(captions: list[list[int]], vocab_size: int) -> torch.Tensor:
    """log(N / df) per token id over ``captions`` (token id lists); 0 for unseen tokens."""
    df = multi_hot(captions, vocab_size).sum(0)
    idf = torch.zeros(vocab_size)
    seen = df > 0
    idf[seen] = torch.log(len(captions) / df[seen])
    return idf


class CaptionTagHead(nn.Module):
    """Clip features (B, N, Dv) -> which caption tokens they show: IDF-weighted soft-target CE."""

    def __init__(self, width: int, idf: torch.Tensor):
        super().__init__()
        self.proj = nn.Linear(width, idf.numel())
        self.register_buffer("idf", idf.clone().float(), persistent=False)  # recomputed from the data

    def targets(self, captions: list[list[int]]) -> torch.Tensor:
        """(B, V): each caption's tokens weighted by IDF, rows summing to 1 (or all 0)."""
        weighted = multi_hot(captions, self.idf.numel(), self.idf.device) * self.idf
        return weighted / weighted.sum(-1, keepdim=True).clamp(min=1e-12)

    def forward(self, features: torch.Tensor, captions: list[list[int]]) -> torch.Tensor:
        logits = self.proj(features.mean(1))  # mean over every frame's tokens
        target = self.targets(captions)
        return -(target * F_.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
