"""Stage 2's KL and cycle-consistency terms and init's caption-token loss, against values worked out by hand."""

import math

import pytest
import torch

from exo2ego_edge.train.caption_tags import CaptionTagHead, token_idf
from exo2ego_edge.train.losses import cycle_consistency, feature_kl


def test_kl_matches_hand_computation():
    # token 1: p = softmax([0, ln 3]) = [1/4, 3/4], q = softmax([0, 0]) = [1/2, 1/2]
    #          KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308...
    # token 2: identical distributions -> 0.  Mean over the two tokens.
    y = torch.tensor([[[0.0, math.log(3.0)], [1.0, 2.0]]])
    fx = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    token1 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert token1 == pytest.approx(0.130812, abs=1e-6)
    assert feature_kl(y, fx).item() == pytest.approx(token1 / 2, abs=1e-6)


def test_kl_temperature_softens_both_sides():
    # tau = 2: p = softmax([0, ln(3)/2]) = [1/(1+sqrt 3), sqrt 3/(1+sqrt 3)], q uniform.
    y = torch.tensor([[[0.0, math.log(3.0)]]])
    fx = torch.zeros(1, 1, 2)
    p1 = 1 / (1 + math.sqrt(3))
    expected = p1 * math.log(p1 / 0.5) + (1 - p1) * math.log((1 - p1) / 0.5)
    assert feature_kl(y, fx, tau=2.0).item() == pytest.approx(expected, abs=1e-6)
    assert expected < feature_kl(y, fx, tau=1.0).item()


def test_kl_direction_is_demonstrator_first():
    y = torch.tensor([[[0.0, 2.0, -1.0]]])
    fx = torch.tensor([[[1.0, 0.0, 0.0]]])
    p, q = torch.softmax(y, -1), torch.softmax(fx, -1)
    forward = (p * (p / q).log()).sum().item()
    reverse = (q * (q / p).log()).sum().item()
    assert forward != pytest.approx(reverse, abs=1e-3)
    assert feature_kl(y, fx).item() == pytest.approx(forward, abs=1e-6)


def test_kl_is_zero_for_equal_features_and_gradient_flows_to_fx():
    y = torch.randn(2, 3, 5)
    fx = y.clone().requires_grad_(True)
    loss = feature_kl(y, fx)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    (feature_kl(y, fx + torch.randn_like(fx))).backward()
    assert fx.grad is not None and fx.grad.abs().sum() > 0


def test_kl_per_frame_compares_each_frames_mean_token():
    # one clip, 2 frames x 2 tokens. Frame 1: y tokens average to [0, ln 3] (the hand-computed
    # case above), F(x) tokens to [0, 0]; frame 2: equal means although the tokens differ.
    ln3 = math.log(3.0)
    y = torch.tensor([[[1.0, ln3 - 1.0], [-1.0, ln3 + 1.0], [2.0, 0.0], [0.0, 2.0]]])
    fx = torch.tensor([[[0.5, -0.5], [-0.5, 0.5], [1.0, 1.0], [1.0, 1.0]]])
    token1 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert feature_kl(y, fx, group=2).item() == pytest.approx(token1 / 2, abs=1e-6)
    assert feature_kl(y, fx, group=2).item() != pytest.approx(feature_kl(y, fx).item(), abs=1e-3)
    with pytest.raises(ValueError):
        feature_kl(y, fx, group=3)


def test_cycle_consistency_is_sum_of_two_mean_absolute_errors():
    x = torch.tensor([[[1.0, -2.0]]])
    gfx = torch.tensor([[[0.0, 0.0]]])  # |.| = 1, 2 -> mean 1.5
    y = torch.tensor([[[3.0], [1.0]]])
    fgy = torch.tensor([[[1.0], [1.0]]])  # |.| = 2, 0 -> mean 1.0
    assert cycle_consistency(x, gfx, y, fgy).item() == pytest.approx(2.5)


def test_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        feature_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


def test_caption_token_idf_by_hand():
    # df over 3 captions: token 1 -> 1, token 2 -> 3 (every caption), token 3 -> 1; 0 and 4 unseen
    idf = token_idf([[1, 2], [2, 3, 3], [2]], vocab_size=5)
    torch.testing.assert_close(idf, torch.tensor([0.0, math.log(3), 0.0, math.log(3), 0.0]))


def test_caption_tag_loss_by_hand():
    idf = torch.tensor([0.0, math.log(3), 0.0, math.log(3), 0.0])
    head = CaptionTagHead(width=2, idf=idf)
    with torch.no_grad():  # logits = bias = [0, ln 2, 0, 0, 0]: softmax = [1, 2, 1, 1, 1] / 6
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.tensor([0.0, math.log(2), 0.0, 0.0, 0.0]))
    # caption [1, 2]: token 2 is in every caption (idf 0), so the target is token 1 alone;
    # caption [1, 3]: half on each.
    torch.testing.assert_close(head.targets([[1, 2], [1, 3]]),
                               torch.tensor([[0, 1.0, 0, 0, 0], [0, 0.5, 0, 0.5, 0]]))
    first = -math.log(2 / 6)
    second = -(0.5 * math.log(2 / 6) + 0.5 * math.log(1 / 6))
    features = torch.randn(2, 4, 2)  # (B, N, Dv): ignored by a zero weight
    assert head(features, [[1, 2], [1, 3]]).item() == pytest.approx((first + second) / 2, abs=1e-6)
