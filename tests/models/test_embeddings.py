import math

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding

from miro.models.embeddings import RewardEmbedder, TimestepEmbedder, sincos_2d, timestep_features


def test_timestep_features_match_dit_and_diffusers():
    t = torch.tensor([0.0, 0.25, 0.999])
    ours = timestep_features(t, 256)
    ref = get_timestep_embedding(t * 1000, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert timestep_features(t, 7).shape == (3, 7)


def test_sincos_2d_matches_diffusers_and_mae_layout():
    for h, w in [(4, 4), (8, 8)]:
        ref = get_2d_sincos_pos_embed(64, h, base_size=h, output_type="pt")
        torch.testing.assert_close(sincos_2d(h, w, 64), ref.float(), rtol=1e-5, atol=1e-5)
    emb = sincos_2d(2, 3, 8)  # row-major; first half encodes the column, second half the row
    assert emb.shape == (6, 8)
    assert torch.equal(emb[1, :4], torch.tensor([math.sin(1), math.sin(1e-2), math.cos(1), math.cos(1e-2)]).float())
    assert torch.equal(emb[3, 4:], emb[4, 4:]) and not torch.equal(emb[3, :4], emb[4, :4])


def test_time_embedder_distinguishes_nearby_times():
    emb = TimestepEmbedder(32)
    out = emb(torch.tensor([0.5, 0.501]))
    assert out.shape == (2, 32) and not torch.allclose(out[0], out[1])


def test_reward_fourier_features_closed_form_and_persistence():
    emb = RewardEmbedder(num_rewards=2, dim=8, fourier_dim=6, fourier_scale=3.0)
    v = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    feats = emb.fourier_features(v)  # [R, B, F]
    ang = 2 * math.pi * v.t()[:, :, None] * emb.freqs[:, None, :]
    torch.testing.assert_close(feats, torch.cat([ang.cos(), ang.sin()], -1))
    assert torch.equal(feats[0, 0], torch.cat([torch.ones(3), torch.zeros(3)]))  # value 0
    assert "freqs" in emb.state_dict()  # checkpoints carry the random frequencies
    assert torch.equal(RewardEmbedder(2, 8, 6, 3.0).freqs, emb.freqs)  # fixed seed
    assert 1.5 < emb.freqs.std() < 4.5
