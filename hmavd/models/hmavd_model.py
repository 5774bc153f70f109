"""The HMAVD model (Section 3): EEG encoder + projections into a shared space with image and text.

Data flow (all features L2-normalised at the end, shapes for a batch of B trials)::

    eeg (B, C, T)            -> encoder -> (B, F) -> Projection_eeg -> eeg_features   (B, D)
    image_features (B, d_i)  -> A_v (Eq. 5) -> Projection_img -> image_features       (B, D)
    text_features (B, d_t)   -> A_t (Eq. 6) -> fuse (Eq. 8, β) -> Projection_txt -> text_features (B, D)

``Base`` (= NICE) is ``use_text=False, use_adapters=False``. The NICE reference code bypasses its image
projection (``Proj_img.forward`` returns its input), so NICE trains only its EEG encoder + Proj_eeg;
``image_projection=False`` (the identity image side, used by the ``nice*`` and ``ablation-base`` configs)
reproduces that exactly (the image features then need ``feature_dim == proj_dim``). The HMAVD configs keep
the projections: Eq. 1 maps every modality into the shared space with its own φ.

Temperature: ``temperature="fixed"`` uses ``logit_scale = 1/τ`` (NICE declares a learnable scale but never
gives it to the optimiser, so it stays 1/0.07); ``"learnable"`` trains ``log(logit_scale)`` initialised
to ``ln(1/τ)`` (clamped at ``logit_scale_max`` as in CLIP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ValidatedConfig
from ..errors import UserError
from .adapters import Adapter, fuse
from .attention import SA_VARIANTS, ChannelSelfAttention
from .encoders import build_encoder, nice_init
from .heads import Projection

__all__ = ["ModelConfig", "HMAVD", "count_parameters"]


@dataclass(frozen=True)
class ModelConfig(ValidatedConfig):
    """Model hyper-parameters (one frozen, hashable record; saved with every checkpoint).

    Attributes
    ----------
    encoder : str
        EEG encoder name in :data:`hmavd.models.encoders.ENCODERS`.
    n_chans, n_times : int
        EEG epoch size.
    feature_dim : int
        Size of the (CLIP) image features, and of the text features unless ``text_dim`` is set.
    proj_dim : int
        Shared-space size D.
    dropout : float
        Dropout of the EEG projection's residual branch (NICE Proj_eeg: 0.5).
    proj_dropout : float
        Dropout of the image/text projections (NICE Proj_img: 0.3).
    use_text, use_adapters : bool
        Switch the text modality and the adapters (Table 3 rows).
    img_reduction, txt_reduction : int
        Adapter compression ratios r (paper: 8 for image, 16 for text).
    adapter_alpha : float
        Adapter residual scale α of Eq. 5-6. The paper says only "α ∈ (0, 1)"; its "α = 0.7" may mean this
        or MCDB's γ (Table 4's best γ is 0.7): both default to 0.7 here.
    adapter_dropout : float
        Dropout on the adapter branch (Fig. 4 shows one; the paper gives no value).
    fusion_beta : float
        β of Eq. 8. Not given by the paper: 0.5 is our choice.
    temperature : {"fixed", "learnable"}
        Temperature policy (see module docstring).
    tau : float
        τ (fixed value or initial value).
    logit_scale_max : float
        Upper clamp of a learnable logit scale.
    text_dim : int or None
        Text feature size when it differs from ``feature_dim``.
    image_projection : bool
        ``False`` = identity image projection, as the NICE reference code behaves.
    init : {"nice", "default"}
        ``"nice"`` applies NICE's ``weights_init_normal`` to the encoder and projections.
    sa_variant : {"fixed", "published"}
        Channel self-attention of the ``tsconv_sa`` encoder: the fixed block (default) or NICE-SA as
        published (see :mod:`hmavd.models.attention`). Ignored by the other encoders.
    eeg_projection : bool
        ``False``: no EEG projection; the encoder's output (its ``out_features`` must be ``proj_dim``) is the
        EEG embedding, as in the MLP recipes (:mod:`hmavd.models.mlp_encoders`).
    normalize_eeg : bool
        ``False``: ``forward`` returns the EEG embedding unnormalised (the loss of the visual-blur method and
        NeuroBridge normalises the image side only); ``encode_eeg`` and the templates stay normalised.
    image_head : str
        ``""``: the image side is ``image_projection``'s; otherwise a trainable head of
        :data:`hmavd.models.image_heads.IMAGE_HEADS` (``linear``, ``mlp_adapter``, ``blur_levels``,
        ``sum_fusion``) mapping (B, feature_dim) to (B, proj_dim), built with ``image_head_kwargs``.
    encoder_kwargs : tuple of (str, value) pairs
        Extra keyword arguments for the encoder (kept hashable).
    """

    encoder: str = "tsconv"
    n_chans: int = 63
    n_times: int = 250
    feature_dim: int = 768
    proj_dim: int = 768
    dropout: float = 0.5
    proj_dropout: float = 0.3
    use_text: bool = True
    use_adapters: bool = True
    img_reduction: int = 8
    txt_reduction: int = 16
    adapter_alpha: float = 0.7
    adapter_dropout: float = 0.0
    fusion_beta: float = 0.5
    temperature: str = "fixed"
    tau: float = 0.07
    logit_scale_max: float = 100.0
    text_dim: int | None = None
    image_projection: bool = True
    init: str = "nice"
    sa_variant: str = "fixed"
    eeg_projection: bool = True
    normalize_eeg: bool = True
    image_head: str = ""  # "" = image_projection as above; else a head of hmavd.models.image_heads.IMAGE_HEADS
    eeg_head: str = ""  # "" = eeg_projection as above; "linear" = Linear(encoder outputs, proj_dim) (NeuroBridge)
    image_head_kwargs: tuple[tuple[str, Any], ...] = ()
    encoder_kwargs: tuple[tuple[str, Any], ...] = ()

    def validate(self) -> None:
        if self.temperature not in ("fixed", "learnable"):
            raise UserError(f"temperature: {self.temperature!r} is not a policy; use 'fixed' or 'learnable'")
        if not self.tau > 0:
            raise UserError(f"tau: {self.tau} must be > 0; the paper uses 0.07")
        if self.sa_variant not in SA_VARIANTS:
            raise UserError(f"sa_variant: {self.sa_variant!r} is unknown; use one of {SA_VARIANTS}")
        if self.init not in ("nice", "default"):
            raise UserError(f"init: {self.init!r} is unknown; use 'nice' or 'default'")
        if not self.image_projection and self.feature_dim != self.proj_dim:
            raise UserError(
                f"image_projection: False needs feature_dim == proj_dim (got {self.feature_dim} and "
                f"{self.proj_dim}); set proj_dim={self.feature_dim} or image_projection=True"
            )
        if self.use_text and not self.image_projection and self.text_dim not in (None, self.proj_dim):
            raise UserError(f"text_dim: {self.text_dim} must equal proj_dim {self.proj_dim} or be null")
        used = {"img_reduction": ("feature_dim", self.feature_dim)}
        if self.use_text:  # the text adapter works on the text features, which may be wider or narrower
            used["txt_reduction"] = ("text_dim", self.text_features_dim)
        for name, (dim_name, dim) in used.items() if self.use_adapters else ():  # only adapters that exist
            r = getattr(self, name)
            if r < 1 or r > dim:
                raise UserError(f"{name}: {r} must be between 1 and {dim_name}={dim}; lower it")
        if not 0.0 <= self.fusion_beta <= 1.0:
            raise UserError(f"fusion_beta: {self.fusion_beta} must be in [0, 1] (e.g. 0.5)")

    @property
    def text_features_dim(self) -> int:
        """Size of the input text features."""
        return self.text_dim if self.text_dim is not None else self.feature_dim


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class HMAVD(nn.Module):
    """EEG–image–text alignment model (HMAVD; NICE when text and adapters are off).

    Parameters
    ----------
    cfg : ModelConfig
        Hyper-parameters; kept as ``self.cfg``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, cfg.n_chans, cfg.n_times, **dict(cfg.encoder_kwargs))
        for m in self.encoder.modules():  # the SA switch (fixed block or NICE-SA as published)
            if isinstance(m, ChannelSelfAttention):
                m.set_variant(cfg.sa_variant)
        self.eeg_projection: nn.Module = (
            Projection(self.encoder.out_features, cfg.proj_dim, cfg.dropout) if cfg.eeg_projection else nn.Identity()
        )
        if cfg.eeg_head == "linear":  # [recipes] NeuroBridge's linear projector on the EEG side
            self.eeg_projection = nn.Linear(self.encoder.out_features, cfg.proj_dim)
        elif cfg.eeg_head:
            raise UserError(f"eeg_head: {cfg.eeg_head!r} is not '' or 'linear'")
        elif not cfg.eeg_projection and self.encoder.out_features != cfg.proj_dim:
            raise UserError(
                f"eeg_projection: False needs an encoder with {cfg.proj_dim} outputs, {cfg.encoder} has "
                f"{self.encoder.out_features}; set encoder_kwargs out_features={cfg.proj_dim} or eeg_projection=True"
            )
        self.image_projection: nn.Module = (
            Projection(cfg.feature_dim, cfg.proj_dim, cfg.proj_dropout) if cfg.image_projection else nn.Identity()
        )
        if cfg.image_head:  # [recipes] a trainable head as the image side (hmavd/models/image_heads.py)
            from .image_heads import build_image_head

            self.image_projection = build_image_head(
                cfg.image_head, cfg.feature_dim, cfg.proj_dim, **dict(cfg.image_head_kwargs)
            )
        self.image_adapter: nn.Module | None = None
        self.text_adapter: nn.Module | None = None
        self.text_projection: nn.Module | None = None
        if cfg.use_adapters:
            self.image_adapter = Adapter(
                cfg.feature_dim, cfg.img_reduction, False, cfg.adapter_alpha, cfg.adapter_dropout
            )
        if cfg.use_text:
            d_t = cfg.text_features_dim
            if cfg.use_adapters:
                self.text_adapter = Adapter(d_t, cfg.txt_reduction, True, cfg.adapter_alpha, cfg.adapter_dropout)
            self.text_projection = (
                Projection(d_t, cfg.proj_dim, cfg.proj_dropout) if cfg.image_projection else nn.Identity()
            )
        if cfg.init == "nice":
            for m in (self.encoder, self.eeg_projection, self.image_projection, self.text_projection):
                if m is not None:
                    m.apply(nice_init)
        init = torch.tensor(math.log(1.0 / cfg.tau))
        if cfg.temperature == "learnable":
            self.log_logit_scale: nn.Parameter | None = nn.Parameter(init)
        else:
            self.log_logit_scale = None
            self.register_buffer("fixed_log_logit_scale", init)

    # ------------------------------------------------------------------ pieces
    @property
    def logit_scale(self) -> Tensor:
        """Scalar tensor ``1/τ`` (fixed) or ``exp(log scale)`` clamped at ``logit_scale_max`` (learnable)."""
        if self.log_logit_scale is not None:
            return self.log_logit_scale.exp().clamp(max=self.cfg.logit_scale_max)
        return self.fixed_log_logit_scale.exp()

    def encode_eeg(self, eeg: Tensor) -> Tensor:
        """EEG (B, C, T) → shared-space features (B, D), L2-normalised (call in ``eval()`` mode at test time)."""
        return F.normalize(self.eeg_projection(self.encoder(eeg)), dim=-1)  # (B, D)

    def _image(self, image_features: Tensor, normalize: bool = True) -> Tensor:
        x = self.image_adapter(image_features) if self.image_adapter is not None else image_features
        x = self.image_projection(x)  # (B, D)
        return F.normalize(x, dim=-1) if normalize else x

    def _text(self, text_features: Tensor, normalize: bool = True) -> tuple[Tensor, Tensor | None]:
        if self.text_projection is None:
            raise UserError("use_text: the model was built with use_text=False; it has no text branch")
        adapted = None
        x = text_features
        if self.text_adapter is not None:
            adapted = self.text_adapter(text_features)  # (B, d_t), A_t(F)
            x = fuse(adapted, text_features, self.cfg.fusion_beta)  # Eq. 8
        x = self.text_projection(x)  # (B, D)
        return (F.normalize(x, dim=-1) if normalize else x), adapted

    # ------------------------------------------------------------------ API
    def forward(self, eeg: Tensor, image_features: Tensor, text_features: Tensor | None = None) -> dict[str, Tensor]:
        """Project one batch into the shared space.

        Parameters
        ----------
        eeg : Tensor
            (B, C, T) float32.
        image_features : Tensor
            (B, feature_dim) CLIP image features of each trial's image.
        text_features : Tensor or None
            (B, text_dim) CLIP text features of each trial's concept; required when ``use_text``.

        Returns
        -------
        dict of Tensor
            ``eeg_features`` (B, D), ``image_features`` (B, D), ``text_features`` (B, D) (with text),
            all L2-normalised; ``text_adapted`` A_t(F) and ``text_raw`` F (B, d_t) for Eq. 7 (with
            text and adapters); ``logit_scale`` scalar.
        """
        out = {
            "eeg_features": (
                self.encode_eeg(eeg) if self.cfg.normalize_eeg else self.eeg_projection(self.encoder(eeg))
            ),  # (B, D)
            "image_features": self._image(image_features),
            "logit_scale": self.logit_scale,
        }
        if self.cfg.use_text:
            if text_features is None:
                raise ValueError("text_features are required when the model uses text (use_text=True)")
            out["text_features"], adapted = self._text(text_features)
            if adapted is not None:
                out["text_adapted"] = adapted
                out["text_raw"] = text_features
        return out

    def encode_templates(
        self,
        image_features: Tensor | None = None,
        text_features: Tensor | None = None,
        kind: str = "image",
        normalize: bool = True,
    ) -> Tensor:
        """Zero-shot templates in the shared space, (K, D) (call in ``eval()`` mode).

        Parameters
        ----------
        image_features : Tensor or None
            (K, feature_dim) image (or concept-centre) features; needed for ``"image"`` and ``"fused"``.
        text_features : Tensor or None
            (K, text_dim) text features; needed for ``"text"`` and ``"fused"``.
        kind : {"image", "text", "fused"}
            ``"fused"`` is the normalised mean of the image and the text template of each class.
        normalize : bool
            ``True``: L2-normalised templates (cosine scoring). ``False``: the branch outputs before the
            final normalisation (``"fused"``: their sum) — NICE's dot-product scoring against raw centre
            features when the image side is the identity.
        """
        if kind not in ("image", "text", "fused"):
            raise UserError(f"kind: {kind!r} is not a template kind; use 'image', 'text' or 'fused'")
        if kind in ("image", "fused") and image_features is None:
            raise UserError(f"kind: {kind!r} templates need image_features; pass them")
        if kind in ("text", "fused") and text_features is None:
            raise UserError(f"kind: {kind!r} templates need text_features; pass them")
        if kind == "image":
            return self._image(image_features, normalize)  # (K, D)
        text = self._text(text_features, normalize)[0]  # (K, D)
        if kind == "text":
            return text
        fused = self._image(image_features, normalize) + text  # (K, D)
        return F.normalize(fused, dim=-1) if normalize else fused

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters owned by each modality (θ^(m) of Eq. 9), for MCDB's κ and gradient norms.

        ``eeg``: encoder + EEG projection (+ the learnable logit scale, shared but placed with the anchor
        modality, whose κ is always 1); ``img``: image adapter + projection; ``text``: text adapter +
        projection (empty without text). Every trainable parameter is in exactly one list.
        """
        eeg = [*self.encoder.parameters(), *self.eeg_projection.parameters()]
        if self.log_logit_scale is not None:
            eeg.append(self.log_logit_scale)
        groups: dict[str, list[nn.Parameter]] = {"eeg": eeg, "img": [], "text": []}
        for name, mods in (
            ("img", (self.image_adapter, self.image_projection)),
            ("text", (self.text_adapter, self.text_projection)),
        ):
            for m in mods:
                if m is not None:
                    groups[name].extend(m.parameters())
        return {k: [p for p in v if p.requires_grad] for k, v in groups.items()}

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per modality group and in total."""
        counts = {k: sum(p.numel() for p in v) for k, v in self.modality_parameters().items()}
        counts["total"] = count_parameters(self)
        return counts
