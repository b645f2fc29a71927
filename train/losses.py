"""Stage 2's feature losses: KL guidance from the demonstrator and cycle consistency.

Notation as in the paper: x = ego features (learner), y = exo features (demonstrator), F maps
ego -> exo space, G maps exo -> ego space. All tensors are (B, N, Dv): N visual tokens of width Dv.

KL choice (the paper does not pin it down): a feature vector is turned into a distribution with a
softmax over the channel axis at temperature ``tau``, and we take KL(softmax(y/tau) ||
softmax(F(x)/tau)), summed over channels and averaged over vectors. The vectors are, by default,
each frame's tokens averaged (``group`` = tokens per frame): the two views are synchronised in
time but not in space, so token i of an ego frame and token i of an exo frame show different
places, and matching them one by one pulled F(x) towards an average exo token (measured: stage 2
then collapsed the student to one constant answer). ``group=1`` is the per-token variant.
The demonstrator is the target distribution, as in distillation. We do *not* rescale by tau^2
(Hinton's convention): the weight ``kl_weight`` already sets the term's scale, and leaving it out
keeps the value equal to the textbook formula for any tau.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_


def feature_kl(y: torch.Tensor, fx: torch.Tensor, tau: float = 1.0, group: int = 1) -> torch.Tensor:
    """KL(softmax(y/tau) || softmax(fx/tau)) over channels, mean over vectors; each vector is the
    mean of ``group`` consecutive tokens (one frame's) or, with ``group=1``, a single token."""
    if y.shape != fx.shape:
        raise ValueError(f"feature_kl: shapes differ, {tuple(y.shape)} vs {tuple(fx.shape)}")
    if y.shape[1] % group:
        raise ValueError(f"feature_kl: {y.shape[1]} tokens are not whole groups of {group}")
    if group > 1:
        y, fx = (t.unflatten(1, (-1, group)).mean(2) for t in (y, fx))
    log_p = F_.log_softmax(y.float() / tau, dim=-1)  # target: the demonstrator
    log_q = F_.log_softmax(fx.float() / tau, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, N)
    return per_token.mean()


def cycle_consistency(
    x: torch.Tensor, gfx: torch.Tensor, y: torch.Tensor, fgy: torch.Tensor
) -> torch.Tensor:
    """|G(F(x)) - x|_1 + |F(G(y)) - y|_1, each a mean absolute error over all elements."""
    return F_.l1_loss(gfx.float(), x.float()) + F_.l1_loss(fgy.float(), y.float())
