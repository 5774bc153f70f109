import pytest

from hmavd.channels import REGIONS, THINGS63, VISUAL17, resolve_channels
from hmavd.errors import UserError


def test_montage_sizes_and_partition():
    assert len(THINGS63) == 63 and len(set(THINGS63)) == 63
    assert len(VISUAL17) == 17 and set(VISUAL17) <= set(THINGS63)
    flat = [c for group in REGIONS.values() for c in group]
    assert sorted(flat) == sorted(THINGS63)  # regions partition the montage
    assert set(REGIONS["occipital"]) == {"PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"}


def test_resolve_channels_orders_and_errors():
    avail = list(reversed(THINGS63))
    assert resolve_channels("all", avail) == avail
    assert resolve_channels("visual17", avail) == list(VISUAL17)
    assert resolve_channels("Oz, Cz", avail) == ["Oz", "Cz"]
    with pytest.raises(UserError, match="Xx"):
        resolve_channels(["Oz", "Xx"], avail)
    with pytest.raises(UserError, match="in sub-01/x.npy"):
        resolve_channels(["Xx"], avail, where="sub-01/x.npy")
    with pytest.raises(UserError, match="more than once"):
        resolve_channels("Oz,Cz,Oz", avail)
    with pytest.raises(UserError, match="names no channel"):
        resolve_channels(" , ", avail)
