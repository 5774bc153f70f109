"""Validation of the live settings that describe the amplifier's stream (one-line errors, exit status 2).

``stream_units``, ``amplitude_check``, ``interpolate_missing``, ``marker_map`` and ``marker_offset_s`` of
:class:`bci.live_config.LiveConfig`; see docs/realtime.md, "Connect your amplifier". They run whenever a
``LiveConfig`` is built and read no files (``marker_map``'s file is checked by
:func:`bci.session_plan.resolve_session`).
"""

from __future__ import annotations

from hmavd.errors import UserError

from .units import unit_to_volts

__all__ = ["validate_online"]


def validate_online(cfg) -> None:
    """Check the amplifier-related fields of a :class:`~bci.live_config.LiveConfig`; raise :class:`UserError`."""
    if cfg.stream_units:
        unit_to_volts(cfg.stream_units, "stream_units")
    if cfg.amplitude_check not in ("refuse", "warn", "off"):
        raise UserError(
            f"amplitude_check: {cfg.amplitude_check!r} is not one of refuse, warn, off "
            "(what to do when an unlabelled stream's amplitude is off by orders of magnitude)"
        )
    if cfg.interpolate_missing < 0:
        raise UserError(f"interpolate_missing: {cfg.interpolate_missing} must be >= 0 (0 = refuse missing channels)")
    if not -2.0 <= cfg.marker_offset_s <= 2.0:
        raise UserError(
            f"marker_offset_s: {cfg.marker_offset_s} s is implausible for a display delay; give seconds in "
            "[-2, 2] (e.g. 0.016 for one 60 Hz frame, measured with a photodiode)"
        )
