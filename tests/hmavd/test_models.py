"""Encoders, attention blocks, adapters, projections and the HMAVD model on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmavd.errors import UserError
from hmavd.models import ENCODERS, HMAVD, Adapter, ModelConfig, Projection, build_encoder, fuse
from hmavd.models.attention import (
    ChannelGraphAttention,
    ChannelSelfAttention,
    SpatialBlock,
    channel_graph,
    sa_scale,
)
from hmavd.models.encoders import TSConv, nice_init, tsconv_out_features


@pytest.mark.parametrize(
    ("n_chans", "n_times", "expected"),
    [(63, 250, 1440), (17, 250, 1440), (17, 100, 240), (8, 75, 40), (5, 180, 40 * 22)],
)
def test_tsconv_output_shape(n_chans, n_times, expected):
    torch.manual_seed(0)
    enc = build_encoder("tsconv", n_chans, n_times)
    assert enc.out_features == expected == tsconv_out_features(n_times)
    enc.eval()
    out = enc(torch.randn(3, n_chans, n_times))
    assert out.shape == (3, expected)


def test_tsconv_matches_nice_layout():
    """Layer by layer, the encoder is NICE's PatchEmbedding; features are flattened time-major."""
    enc = TSConv(63, 250, fused=False)  # NICE's layer order, bit for bit; fused == this: test_fused_tsconv.py
    conv1, pool, bn1, _, conv2, bn2, _, drop = enc.tsconv
    assert conv1.kernel_size == (1, 25) and conv1.out_channels == 40
    assert pool.kernel_size == (1, 51) and pool.stride == (1, 5)
    assert conv2.kernel_size == (63, 1) and drop.p == 0.5
    assert enc.projection.kernel_size == (1, 1)
    enc.eval()
    x = torch.randn(2, 63, 250)
    with torch.no_grad():
        maps = enc.projection(enc.tsconv(x.unsqueeze(1)))  # (B, 40, 1, 36)
        flat = enc(x)
    assert torch.equal(flat.view(2, 36, 40), maps[:, :, 0, :].transpose(1, 2))


def test_short_epoch_is_a_user_error():
    with pytest.raises(UserError, match="n_times"):
        build_encoder("tsconv", 17, 50)
    with pytest.raises(UserError, match="encoder"):
        build_encoder("nope", 17, 250)


@pytest.mark.parametrize("name", ["tsconv_sa", "tsconv_ga", "resmlp"])
@pytest.mark.parametrize("n_chans", [17, 63])
def test_variants_shapes(name, n_chans):
    torch.manual_seed(0)
    enc = build_encoder(name, n_chans, 250)
    out = enc(torch.randn(4, n_chans, 250))
    assert out.shape == (4, enc.out_features)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_registry_names():
    mlp = {"eeg_project", "brain_mlp", "blur_spatial_mlp"}  # hmavd/models/mlp_encoders.py
    assert set(ENCODERS) == {"tsconv", "tsconv_sa", "tsconv_ga", "resmlp", *mlp}


def _two_channel_sa(n_times, variant):
    """SA block on 2 channels with identity query/key/projection maps (LayerNorm default, no dropout)."""
    sa = ChannelSelfAttention(2, n_times, dropout=0.0, variant=variant)
    with torch.no_grad():
        for block in (sa.query, sa.key, sa.projection):
            block[0].weight.copy_(torch.eye(2))
            block[0].bias.zero_()
    return sa


@pytest.mark.parametrize(("variant", "scale_denominator"), [("fixed", 60), ("published", 60 // 30)])
def test_self_attention_against_a_hand_computation(variant, scale_denominator):
    """Two channels 2 apart at every sample: LayerNorm over the channels maps each time point to
    (+c, -c) with c = 1/sqrt(1 + 1e-5), so q = k = that pattern and the scores are +-T c^2 scale: A is
    [[s, 1 - s], [1 - s, s]] with s = sigmoid(2 T c^2 scale), scale 1/sqrt(T) (fixed) or 1/sqrt(T // 30)."""
    t = 60
    x = torch.zeros(1, 2, t)
    x[0, 0] = torch.linspace(-1.0, 1.0, t) + 1.0
    x[0, 1] = torch.linspace(-1.0, 1.0, t) - 1.0
    sa = _two_channel_sa(t, variant)
    c2 = 1.0 / (1.0 + 1e-5)
    s = 1.0 / (1.0 + math.exp(-2 * t * c2 / math.sqrt(scale_denominator)))
    attn = sa.attention(x)[0]
    assert sa.scale == pytest.approx(1 / math.sqrt(scale_denominator))
    assert torch.allclose(attn, torch.tensor([[s, 1 - s], [1 - s, s]]), atol=1e-6)
    # the output by hand: mix the rows (fixed) or keep them (published), then LayerNorm over 2 channels
    mixed = attn.double() @ x[0].double() if variant == "fixed" else x[0].double()  # (2, T)
    diff = (mixed[0] - mixed[1]) / 2
    expected = torch.stack([diff, -diff]) / torch.sqrt(diff**2 + 1e-5)
    assert torch.allclose(sa(x)[0].double(), expected, atol=1e-5)


def test_published_attention_cancels_and_the_fixed_one_does_not():
    """NICE-SA as released: ``out = projection(x * rowsum(A))`` = projection(x) whatever the attention."""
    torch.manual_seed(0)
    x = torch.randn(3, 17, 250)
    published = ChannelSelfAttention(17, 250, dropout=0.0, variant="published")
    fixed = ChannelSelfAttention(17, 250, dropout=0.0)
    fixed.load_state_dict(published.state_dict())
    no_attention = published.projection(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T)
    assert torch.allclose(published(x), no_attention, atol=1e-5)
    assert not torch.allclose(fixed(x), no_attention, atol=1e-2)
    assert published.scale == pytest.approx(1 / math.sqrt(8)) and fixed.scale == pytest.approx(1 / math.sqrt(250))
    assert sa_scale(20, "published") == 1.0  # T // 30 = 0 is floored at 1
    with pytest.raises(ValueError, match="variant"):
        sa_scale(250, "other")
    # the model switch reaches the block; the configs pick it by name
    model = HMAVD(small_cfg(encoder="tsconv_sa", sa_variant="published"))
    assert model.encoder.spatial.module.variant == "published"
    assert HMAVD(small_cfg(encoder="tsconv_sa")).encoder.spatial.module.variant == "fixed"
    with pytest.raises(UserError, match="sa_variant"):
        small_cfg(sa_variant="nice")


def test_graph_attention_is_per_sample():
    """Every sample gets channel edges (the reference only wired the first sample of a batch)."""
    torch.manual_seed(0)
    ga = ChannelGraphAttention(50)
    x = torch.randn(3, 17, 50)
    base = ga(x)
    attn = ga.last_attention
    assert attn.shape == (3, 17, 17)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 17))
    assert not torch.allclose(attn[1], attn[2])  # weights depend on each sample's data
    # perturbing one channel of sample 2 changes the other channels of sample 2 only
    x2 = x.clone()
    x2[2, 0] += 1.0
    out2 = ga(x2)
    assert not torch.allclose(out2[2, 5], base[2, 5])
    assert torch.equal(out2[:2], base[:2])


def test_graph_attention_matches_gat_formula():
    torch.manual_seed(1)
    ga = ChannelGraphAttention(6)
    x = torch.randn(1, 4, 6)
    out = ga(x)[0]
    h = ga.lin(x[0])
    ref = torch.zeros(4, 6)
    for i in range(4):
        e = torch.stack([F.leaky_relu(ga.att_dst @ h[i] + ga.att_src @ h[j], 0.2) for j in range(4)])
        ref[i] = (e.softmax(0)[:, None] * h).sum(0) + ga.bias
    assert torch.allclose(out, ref, atol=1e-5)


def test_topk_channel_graph_differs_per_sample():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 40)
    x[0, 1] = x[0, 0] * 2 + 0.01 * torch.randn(40)  # sample 0: channels 0 and 1 correlated
    x[1, 2] = -x[1, 0] + 0.01 * torch.randn(40)  # sample 1: channels 0 and 2 (anti-)correlated
    adj = channel_graph(x, topk=1)
    assert adj.shape == (2, 6, 6)
    assert adj[0].diagonal().all() and adj[1].diagonal().all()
    assert adj[0, 0, 1] and not adj[0, 0, 2]
    assert adj[1, 0, 2] and not adj[1, 0, 1]
    assert (adj.sum(-1) == 2).all()
    assert channel_graph(x).all()
    enc = build_encoder("tsconv_ga", 6, 100, ga_topk=2)
    assert enc(torch.randn(2, 6, 100)).shape == (2, 40 * 6)


@pytest.mark.parametrize(("dim", "r", "bias"), [(768, 8, False), (768, 16, True), (64, 4, True)])
def test_adapter_shapes_and_biases(dim, r, bias):
    torch.manual_seed(0)
    ad = Adapter(dim, r, bias=bias, alpha=0.7)
    assert ad.hidden == dim // r
    assert ad.down.weight.shape == (dim // r, dim) and ad.up.weight.shape == (dim, dim // r)
    assert (ad.down.bias is not None) == bias and ad.up.bias is None
    assert (ad.out_bias is not None) == bias
    n_expected = 2 * dim * (dim // r) + (dim // r + dim if bias else 0)
    assert sum(p.numel() for p in ad.parameters()) == n_expected
    x = torch.randn(5, dim)
    assert ad(x).shape == (5, dim)


def test_adapter_formula_and_identity():
    torch.manual_seed(0)
    ad = Adapter(32, 4, bias=True, alpha=0.3)
    with torch.no_grad():
        ad.out_bias.normal_()
    x = torch.randn(3, 32)
    expected = x + 0.3 * (torch.relu(x @ ad.down.weight.T + ad.down.bias) @ ad.up.weight.T) + ad.out_bias
    assert torch.allclose(ad(x), expected, atol=1e-6)
    assert torch.equal(Adapter(32, 8, bias=False, alpha=0.0)(x), x)
    assert torch.equal(Adapter(32, 8, bias=True, alpha=0.0)(x), x)  # fresh b2 = 0


def test_fuse():
    a, o = torch.full((2, 3), 2.0), torch.full((2, 3), 4.0)
    assert torch.allclose(fuse(a, o, 0.25), torch.full((2, 3), 3.5))
    assert torch.equal(fuse(a, o, 1.0), a) and torch.equal(fuse(a, o, 0.0), o)


def test_projection_layout():
    torch.manual_seed(0)
    proj = Projection(10, 6, dropout=0.0)
    x = torch.randn(4, 10)
    h = proj.linear(x)
    expected = F.layer_norm(h + proj.residual[1](F.gelu(h)), (6,), proj.norm.weight, proj.norm.bias)
    assert torch.allclose(proj(x), expected, atol=1e-6)


def small_cfg(**kw):
    base = dict(n_chans=8, n_times=100, feature_dim=32, proj_dim=16, img_reduction=8, txt_reduction=16)
    base.update(kw)
    return ModelConfig(**base)


def test_text_reduction_is_checked_against_the_text_features_dim():
    """A text bank narrower than the image bank: txt_reduction is bounded by text_dim, in one line."""
    assert HMAVD(small_cfg(text_dim=16, txt_reduction=16)).text_adapter.hidden == 1
    with pytest.raises(UserError, match=r"txt_reduction: 24 must be between 1 and text_dim=16"):
        small_cfg(text_dim=16, txt_reduction=24)  # fits feature_dim=32, not the 16-d text features
    small_cfg(text_dim=16, txt_reduction=24, use_adapters=False)  # no adapter, nothing to check


def test_hmavd_forward_keys_and_norms():
    torch.manual_seed(0)
    model = HMAVD(small_cfg())
    out = model(torch.randn(5, 8, 100), torch.randn(5, 32), torch.randn(5, 32))
    assert set(out) == {"eeg_features", "image_features", "text_features", "text_adapted", "text_raw", "logit_scale"}
    for key in ("eeg_features", "image_features", "text_features"):
        assert out[key].shape == (5, 16)
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(5), atol=1e-5)
    assert out["text_adapted"].shape == (5, 32)
    assert math.isclose(float(out["logit_scale"]), 1 / 0.07, rel_tol=1e-6)
    assert model.image_adapter.down.bias is None and model.text_adapter.down.bias is not None
    assert model.image_adapter.hidden == 4 and model.text_adapter.hidden == 2


def test_base_is_nice():
    model = HMAVD(small_cfg(use_text=False, use_adapters=False))
    out = model(torch.randn(4, 8, 100), torch.randn(4, 32))
    assert set(out) == {"eeg_features", "image_features", "logit_scale"}
    groups = model.modality_parameters()
    assert groups["text"] == [] and len(groups["img"]) == 6  # Projection: 3 Linear/LN pairs
    # NICE's reference bypasses Proj_img: image_projection=False reproduces it
    ref = HMAVD(small_cfg(use_text=False, use_adapters=False, image_projection=False, proj_dim=32))
    img = torch.randn(4, 32)
    assert torch.allclose(ref(torch.randn(4, 8, 100), img)["image_features"], F.normalize(img, dim=-1))
    with pytest.raises(UserError, match="image_projection"):
        small_cfg(image_projection=False)


def test_modality_parameters_partition_the_model():
    model = HMAVD(small_cfg(temperature="learnable"))
    groups = model.modality_parameters()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert any(p is model.log_logit_scale for p in groups["eeg"])
    assert all(any(p is q for q in groups["text"]) for p in model.text_adapter.parameters())


def test_learnable_temperature():
    model = HMAVD(small_cfg(temperature="learnable", tau=0.1))
    assert math.isclose(float(model.log_logit_scale.detach()), math.log(10.0), rel_tol=1e-6)
    out = model(torch.randn(3, 8, 100), torch.randn(3, 32), torch.randn(3, 32))
    out["logit_scale"].backward()
    assert model.log_logit_scale.grad is not None
    fixed = HMAVD(small_cfg())
    assert not any("logit" in n for n, _ in fixed.named_parameters())
    with pytest.raises(UserError, match="temperature"):
        small_cfg(temperature="cosine")


def test_encode_templates_and_eval_consistency():
    torch.manual_seed(0)
    model = HMAVD(small_cfg()).eval()
    eeg, img, txt = torch.randn(4, 8, 100), torch.randn(4, 32), torch.randn(4, 32)
    with torch.no_grad():
        out = model(eeg, img, txt)
        assert torch.allclose(model.encode_eeg(eeg), out["eeg_features"])
        t_img = model.encode_templates(image_features=img, kind="image")
        t_txt = model.encode_templates(text_features=txt, kind="text")
        t_fused = model.encode_templates(img, txt, kind="fused")
    assert torch.allclose(t_img, out["image_features"]) and torch.allclose(t_txt, out["text_features"])
    assert torch.allclose(t_fused, F.normalize(t_img + t_txt, dim=-1))
    with pytest.raises(UserError, match="kind"):
        model.encode_templates(img, kind="text")


def test_encoder_kwargs_pass_through():
    model = HMAVD(small_cfg(encoder="resmlp", encoder_kwargs=(("hidden", 24), ("n_blocks", 1))))
    assert model.encoder.out_features == 24 and len(model.encoder.blocks) == 1
    hash(model.cfg)


def test_docs_parameter_table_matches_code():
    """docs/model.md's parameter counts are what the code builds."""
    from pathlib import Path

    from hmavd.models import count_parameters

    text = (Path(__file__).resolve().parents[2] / "docs" / "model.md").read_text()
    for name in ("tsconv", "tsconv_ga"):
        counts = [f"{count_parameters(build_encoder(name, c, 250)):,}" for c in (17, 63)]
        assert f"| `{name}` | {counts[0]} | {counts[1]} |" in text
    nice = dict(use_text=False, use_adapters=False, image_projection=False)
    for row, kw in (
        ("NICE (Base): `nice`, `ablation-base`", nice),
        ("NICE-SA: `nice-sa`", {**nice, "encoder": "tsconv_sa"}),
        ("NICE with an image projection (`nice image_projection=true`)", {**nice, "image_projection": True}),
        ("Base + Text: `ablation-text`", dict(use_adapters=False)),
        ("HMAVD-63", {}),
    ):
        c = HMAVD(ModelConfig(**kw)).parameter_counts()
        assert f"| {row} | 63×250 | 1440 | {c['eeg']:,} | {c['img']:,} | {c['text']:,} | {c['total']:,} |" in text


@pytest.mark.gpu
def test_model_and_templates_on_cuda():
    torch.manual_seed(0)
    model = HMAVD(small_cfg(encoder="tsconv_ga")).cuda()
    out = model(torch.randn(4, 8, 100).cuda(), torch.randn(4, 32).cuda(), torch.randn(4, 32).cuda())
    assert out["eeg_features"].is_cuda and out["logit_scale"].is_cuda
    cpu = HMAVD(small_cfg(encoder="tsconv_ga"))
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    x = torch.randn(3, 8, 100)
    with torch.no_grad():
        assert torch.allclose(cpu.eval().encode_eeg(x), model.eval().encode_eeg(x.cuda()).cpu(), atol=1e-4)


class _NiceEncEeg(nn.Module):
    """NICE's ``Enc_eeg`` (``PatchEmbedding`` + ``FlattenHead``) rebuilt from plain torch layers in NICE's
    order, independently of :class:`TSConv`: Conv (1, 25) -> AvgPool (1, 51)/(1, 5) -> BN -> ELU ->
    Conv (C, 1) -> BN -> ELU -> Dropout -> 1x1 Conv -> Rearrange 'b e (h) (w) -> b (h w) e' -> flatten."""

    def __init__(self, n_chans):
        super().__init__()
        self.tsconv = nn.Sequential(
            nn.Conv2d(1, 40, (1, 25), (1, 1)),
            nn.AvgPool2d((1, 51), (1, 5)),
            nn.BatchNorm2d(40),
            nn.ELU(),
            nn.Conv2d(40, 40, (n_chans, 1), (1, 1)),
            nn.BatchNorm2d(40),
            nn.ELU(),
            nn.Dropout(0.5),
        )
        self.projection = nn.Conv2d(40, 40, (1, 1), stride=(1, 1))

    def forward(self, x):  # x (B, 1, C, T) as NICE feeds it
        y = self.projection(self.tsconv(x))  # (B, 40, 1, T')
        b, e, h, w = y.shape
        return y.permute(0, 2, 3, 1).reshape(b, h * w, e).reshape(b, -1)  # 'b e h w -> b (h w) e', flatten


@pytest.mark.parametrize("fused", [True, False])
def test_tsconv_equals_an_independent_nice_reconstruction_with_copied_weights(fused):
    torch.manual_seed(0)
    ref = _NiceEncEeg(63)
    ref.apply(nice_init)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for bn in (ref.tsconv[2], ref.tsconv[5]):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.normal_(0, 0.1)
    enc = TSConv(63, 250, fused=fused)
    ref_state = list(ref.state_dict().values())
    enc_state = enc.state_dict()
    assert [tuple(v.shape) for v in enc_state.values()] == [tuple(v.shape) for v in ref_state]
    enc.load_state_dict(dict(zip(enc_state, ref_state)))
    x = torch.randn(5, 63, 250)
    with torch.no_grad():
        ref.eval(), enc.eval()
        assert torch.allclose(enc(x), ref(x.unsqueeze(1)), atol=1e-5)
        ref.train(), enc.train()  # batch statistics; dropout drawn from the same seed
        torch.manual_seed(1)
        out_ref = ref(x.unsqueeze(1))
        torch.manual_seed(1)
        out_enc = enc(x)
    assert out_enc.shape == (5, 1440)
    assert torch.allclose(out_enc, out_ref, atol=1e-5)


def test_nice_init_statistics():
    """NICE's weights_init_normal: Conv/Linear weights N(0, 0.02), BatchNorm weight N(1, 0.02), bias 0."""
    torch.manual_seed(0)
    model = HMAVD(ModelConfig(use_text=False, use_adapters=False, image_projection=False))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 5 and len(bns) == 2  # 3 convolutions + Proj_eeg's two Linear layers
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(float(weights.mean())) < 1e-3 and float(weights.std()) == pytest.approx(0.02, rel=0.01)
    for m in convs:  # every layer, even the 1000-weight first convolution (PyTorch's default: std 0.115)
        assert float(m.weight.detach().std()) == pytest.approx(0.02, rel=0.1), m
    bn_w = torch.cat([m.weight.detach() for m in bns])
    assert float(bn_w.mean()) == pytest.approx(1.0, abs=0.01) and 0.01 < float(bn_w.std()) < 0.03
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)
    default = HMAVD(ModelConfig(use_text=False, use_adapters=False, image_projection=False, init="default"))
    assert float(default.encoder.tsconv[0].weight.detach().std()) > 0.05


def test_image_adapter_eq5_without_biases_and_alpha():
    """Eq. 5: A_v(F) = F + α W2 ReLU(W1 F), no biases, with α ≠ 0 and a trained (non-zero) W2."""
    torch.manual_seed(0)
    ad = Adapter(32, 8, bias=False, alpha=0.7)
    with torch.no_grad():
        ad.up.weight.normal_()
    x = torch.randn(3, 32)
    w1, w2 = ad.down.weight.detach().double(), ad.up.weight.detach().double()
    expected = x.double() + 0.7 * (torch.clamp(x.double() @ w1.T, min=0) @ w2.T)
    assert [n for n, _ in ad.named_parameters()] == ["down.weight", "up.weight"]
    assert torch.allclose(ad(x).double(), expected, atol=1e-5)
    assert not torch.allclose(ad(x), x, atol=1e-2)


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_fusion_beta_reaches_the_models_forward(beta):
    """Eq. 8 inside HMAVD.forward: text_features = normalize(β A_t(F) + (1 − β) F) (identity projections)."""
    torch.manual_seed(0)
    model = HMAVD(small_cfg(image_projection=False, proj_dim=32, fusion_beta=beta, txt_reduction=4))
    ad = model.text_adapter
    with torch.no_grad():
        ad.up.weight.normal_()
        ad.out_bias.normal_()
    f = torch.randn(4, 32)
    w1, b1, w2 = ad.down.weight.detach(), ad.down.bias.detach(), ad.up.weight.detach()
    adapted = f + 0.7 * (torch.relu(f @ w1.T + b1) @ w2.T) + ad.out_bias.detach()  # Eq. 6 by hand
    expected = F.normalize(beta * adapted + (1 - beta) * f, dim=-1)
    out = model(torch.randn(4, 8, 100), torch.randn(4, 32), f)
    assert torch.allclose(out["text_features"], expected, atol=1e-5)
    assert torch.allclose(out["text_adapted"], adapted, atol=1e-5) and torch.equal(out["text_raw"], f)


def test_image_adapter_reaches_the_models_forward():
    """With adapters and the identity image side, image_features = normalize(A_v(F)) (Eq. 5)."""
    torch.manual_seed(0)
    model = HMAVD(small_cfg(image_projection=False, proj_dim=32, use_text=False))
    ad = model.image_adapter
    with torch.no_grad():
        ad.up.weight.normal_()
    f = torch.randn(4, 32)
    adapted = f + 0.7 * (torch.relu(f @ ad.down.weight.detach().T) @ ad.up.weight.detach().T)
    out = model(torch.randn(4, 8, 100), f)
    assert torch.allclose(out["image_features"], F.normalize(adapted, dim=-1), atol=1e-5)


def test_learnable_logit_scale_is_clamped():
    model = HMAVD(small_cfg(temperature="learnable", logit_scale_max=100.0))
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(1000.0))
    assert float(model.logit_scale.detach()) == pytest.approx(100.0)
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(50.0))
    assert float(model.logit_scale.detach()) == pytest.approx(50.0)


@pytest.mark.parametrize("kind", ["sa", "ga"])
def test_spatial_block_is_residual(kind):
    """x + Dropout(module(norm(x))): a module whose output is zero leaves the epoch unchanged."""
    torch.manual_seed(0)
    block = SpatialBlock(kind, 4, 60, dropout=0.0)
    x = torch.randn(2, 4, 60)
    assert not torch.allclose(block(x), x, atol=1e-3)
    with torch.no_grad():
        if kind == "sa":  # projection Linear -> LayerNorm: zero weights and biases give exactly 0
            for p in block.module.projection.parameters():
                p.zero_()
        else:
            block.module.lin.weight.zero_()
            block.module.bias.zero_()
    assert torch.equal(block(x), x)


def test_graph_attention_follows_the_topk_graph():
    torch.manual_seed(0)
    ga = ChannelGraphAttention(40, topk=2)
    x = torch.randn(3, 6, 40)
    ga(x)
    attn, adj = ga.last_attention, ga.last_adjacency
    assert (adj.sum(-1) == 3).all()  # 2 neighbours + self
    assert torch.equal(attn[~adj], torch.zeros(int((~adj).sum())))
    assert torch.allclose(attn.sum(-1), torch.ones(3, 6)) and (attn[adj] > 0).all()
