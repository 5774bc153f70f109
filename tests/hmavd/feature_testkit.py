"""Helpers shared by the feature-extraction tests (tiny random open_clip towers)."""

import torch


def spread_visual(model, seed=0):
    """Re-draw the vision tower's matrices with std 2/sqrt(fan_in) and zero the class embedding.

    open_clip's default init of a 1-layer tower maps every image to nearly one direction (median
    cosine 0.99 between random images), which the collapse check rightly refuses; this gives a tiny
    random tower whose images differ (median cosine ~0.5).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel() ** 0.5))
            elif "class_embedding" in name:
                p.zero_()
