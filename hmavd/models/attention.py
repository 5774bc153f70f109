"""Spatial (channel) modules placed in front of the NICE encoder: self-attention (SA) and graph attention (GA).

Both follow NICE's ``spatial_modules.py`` in placement and shape — a residual block on the raw epoch
``x + Dropout(0.3)(module(x))`` with ``x`` of shape (B, 1, C, T) — and fix its defects:

* **SA** (``channel_attention``): the reference hard-wires 64 channels (ThingsEEG2 has 63, so it cannot
  run unchanged) and its output einsum ``'b o c s, b o c m -> b o c s'`` sums the attention row
  (which is 1 after the softmax), so the attention weights never reach the output. Here the layers are
  sized for the actual ``n_chans`` and the attention is applied (``out = A @ x``); the scores use the
  usual scaled dot product over time (scale ``1 / sqrt(n_times)``). ``variant="published"`` reproduces
  the published block for the NICE-SA row: scores scaled by ``1 / sqrt(n_times // 30)`` and the output
  einsum that multiplies x by the attention's row sums (= 1), so the block reduces to
  ``projection(x)`` (the layers stay sized for ``n_chans``).
* **GA** (``EEG_GAT``): the reference flattens the batch to ``B * C`` graph nodes but builds the edge list
  for 64 nodes only, so only the first sample of a batch has channel edges (every other sample is just a
  per-channel linear map). Here a single-head GAT layer (Veličković et al. 2018, the layer of
  ``torch_geometric.nn.GATConv``) runs densely in plain torch on a per-sample channel graph: by default
  every sample's channels are fully connected (with self loops, as ``GATConv`` adds them), optionally each
  channel keeps only its ``topk`` most correlated channels *in that sample*.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SA_VARIANTS", "ChannelSelfAttention", "ChannelGraphAttention", "SpatialBlock", "channel_graph", "sa_scale"]

#: Self-attention variants: ``"fixed"`` (attention applied, scale 1/√T) and ``"published"`` (NICE-SA as
#: released: scale 1/√(T // 30), attention that cancels out).
SA_VARIANTS = ("fixed", "published")


def sa_scale(n_times: int, variant: str = "fixed") -> float:
    """Score scale of :class:`ChannelSelfAttention`: ``1/√T`` (fixed) or ``1/√(T // 30)`` (published).

    The published block computes ``int(T / 30)`` ("extract_sequence", 8 at T = 250); it is floored at 1
    here so that epochs shorter than 30 samples do not divide by zero.
    """
    if variant not in SA_VARIANTS:
        raise ValueError(f"variant must be one of {SA_VARIANTS}, got {variant!r}")
    return 1.0 / math.sqrt(n_times if variant == "fixed" else max(n_times // 30, 1))


class ChannelSelfAttention(nn.Module):
    """Self-attention across EEG channels (NICE "SA", fixed).

    Queries and keys are linear mixes of the channels at each time point (``Linear(C, C)``, LayerNorm,
    dropout), scores are dot products over time between channel rows, the softmax-normalised
    (C, C) attention matrix mixes the channels of the input and a final ``Linear(C, C)`` + LayerNorm +
    dropout projects the result, as in the reference.

    Parameters
    ----------
    n_chans : int
        Number of EEG channels C.
    n_times : int
        Number of time samples T (sets the score scale, see :func:`sa_scale`).
    dropout : float
        Dropout after the query/key/output layers (reference: 0.3).
    variant : {"fixed", "published"}
        ``"fixed"``: ``out = projection(A @ x)``, scale 1/√T. ``"published"``: NICE-SA as released,
        ``out = projection(x * A.sum(-1))`` (= ``projection(x)`` up to rounding), scale 1/√(T // 30).
    """

    def __init__(self, n_chans: int, n_times: int, dropout: float = 0.3, variant: str = "fixed"):
        super().__init__()
        self.n_chans, self.n_times = n_chans, n_times
        self.set_variant(variant)

        def block() -> nn.Sequential:
            return nn.Sequential(nn.Linear(n_chans, n_chans), nn.LayerNorm(n_chans), nn.Dropout(dropout))

        self.query = block()
        self.key = block()
        self.projection = block()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.last_attention: Tensor | None = None

    def set_variant(self, variant: str) -> None:
        """Switch between the fixed and the published block (sets :attr:`variant` and :attr:`scale`)."""
        self.scale = sa_scale(self.n_times, variant)
        self.variant = variant

    def attention(self, x: Tensor) -> Tensor:
        """Channel attention weights, (B, C, C) rows summing to 1, for x of shape (B, C, T)."""
        xt = x.transpose(1, 2)  # (B, T, C)
        q = self.query(xt).transpose(1, 2)  # (B, C, T)
        k = self.key(xt).transpose(1, 2)  # (B, C, T)
        scores = torch.einsum("bct,bmt->bcm", q, k) * self.scale  # (B, C, C)
        return scores.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, T) to (B, C, T)."""
        attn = self.attention(x)  # (B, C, C)
        self.last_attention = attn.detach()
        if self.variant == "published":  # reference einsum 'b o c s, b o c m -> b o c s': x * row sums
            out = torch.einsum("bct,bcm->bct", x, attn)  # (B, C, T)
        else:
            out = torch.einsum("bcm,bmt->bct", attn, x)  # (B, C, T)
        out = self.projection(out.transpose(1, 2)).transpose(1, 2)  # (B, C, T)
        return out


def channel_graph(x: Tensor, topk: int | None = None) -> Tensor:
    """Per-sample channel adjacency (with self loops) for graph attention.

    Parameters
    ----------
    x : Tensor
        EEG, shape (B, C, T).
    topk : int or None
        ``None`` (or ``topk >= C - 1``): every channel is connected to every channel of the same sample.
        Otherwise each channel keeps edges to its ``topk`` most correlated channels (absolute Pearson
        correlation over time, computed per sample) plus itself, so the graph differs per sample.

    Returns
    -------
    Tensor
        Boolean adjacency, shape (B, C, C); ``adj[b, i, j]`` means node i receives a message from j.
    """
    b, c, _ = x.shape
    eye = torch.eye(c, dtype=torch.bool, device=x.device).expand(b, c, c)
    if topk is None or topk >= c - 1:
        return torch.ones(b, c, c, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        xc = x - x.mean(dim=-1, keepdim=True)  # (B, C, T)
        xc = xc / (xc.norm(dim=-1, keepdim=True) + 1e-8)
        corr = (xc @ xc.transpose(1, 2)).abs()  # (B, C, C)
        corr = corr.masked_fill(eye, -1.0)
        idx = corr.topk(topk, dim=-1).indices  # (B, C, k)
        adj = torch.zeros(b, c, c, dtype=torch.bool, device=x.device)
        adj.scatter_(-1, idx, True)
    return adj | eye


class ChannelGraphAttention(nn.Module):
    """Single-head graph attention over a per-sample channel graph (NICE "GA", fixed), plain torch.

    Nodes are the channels of one sample with their T samples as features. With ``h = W x``,
    ``e_ij = LeakyReLU_0.2(a_dst . h_i + a_src . h_j)`` on the graph's edges, ``alpha = softmax_j(e)``
    and ``out_i = sum_j alpha_ij h_j + bias`` — the ``GATConv(T, T, heads=1)`` layer of the reference.

    Parameters
    ----------
    n_times : int
        Node feature size T (in and out).
    topk : int or None
        Graph per sample: ``None`` = fully connected channels, else k most correlated channels; see
        :func:`channel_graph`.
    negative_slope : float
        LeakyReLU slope of the attention scores (GATConv: 0.2).
    """

    def __init__(self, n_times: int, topk: int | None = None, negative_slope: float = 0.2):
        super().__init__()
        self.topk = topk
        self.negative_slope = negative_slope
        self.lin = nn.Linear(n_times, n_times, bias=False)
        self.att_src = nn.Parameter(torch.empty(n_times))
        self.att_dst = nn.Parameter(torch.empty(n_times))
        self.bias = nn.Parameter(torch.zeros(n_times))
        nn.init.xavier_uniform_(self.lin.weight)
        bound = math.sqrt(6.0 / (1 + n_times))  # glorot on a (1, T) attention vector, as GATConv
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)
        self.last_attention: Tensor | None = None
        self.last_adjacency: Tensor | None = None

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (attention (B, C, C), projected node features h (B, C, T)) for x of shape (B, C, T)."""
        h = self.lin(x)  # (B, C, T)
        adj = channel_graph(x, self.topk)  # (B, C, C)
        e = (h @ self.att_dst).unsqueeze(-1) + (h @ self.att_src).unsqueeze(-2)  # (B, C, C)
        e = F.leaky_relu(e, self.negative_slope)
        e = e.masked_fill(~adj, float("-inf"))
        self.last_adjacency = adj
        return e.softmax(dim=-1), h

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, T) to (B, C, T)."""
        attn, h = self.attention(x)  # (B, C, C), (B, C, T)
        self.last_attention = attn.detach()
        return attn @ h + self.bias  # (B, C, T)


class SpatialBlock(nn.Module):
    """Residual spatial block in front of the encoder: ``x + Dropout(module(norm(x)))`` on (B, C, T).

    ``kind="sa"`` uses ``LayerNorm(T)`` before :class:`ChannelSelfAttention` (as the reference);
    ``kind="ga"`` applies :class:`ChannelGraphAttention` directly.
    """

    def __init__(
        self,
        kind: str,
        n_chans: int,
        n_times: int,
        dropout: float = 0.3,
        topk: int | None = None,
    ):
        super().__init__()
        if kind == "sa":
            self.norm: nn.Module = nn.LayerNorm(n_times)
            self.module: nn.Module = ChannelSelfAttention(n_chans, n_times, dropout)
        elif kind == "ga":
            self.norm = nn.Identity()
            self.module = ChannelGraphAttention(n_times, topk=topk)
        else:
            raise ValueError(f"kind must be 'sa' or 'ga', got {kind!r}")
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, T) to (B, C, T)."""
        return x + self.drop(self.module(self.norm(x)))
