"""The PsychoPy window behind ``hmavd-present`` (optional: ``pip install 'hmavd[present]'``).

A thin :class:`bci.present.Display`: it preloads each sequence's images during the blank before it,
draws the image (or the fixation cross), the photodiode patch while an image is on, and returns the
time of every flip on the LSL clock (``pylsl.local_clock()`` read right after ``win.flip()`` returns,
i.e. at the vertical retrace with PsychoPy's default ``waitBlanking``). The display's own delay (the
panel's input lag) is not in that time: measure it with the photodiode patch (docs/experiment.md).
Imported only when a window is asked for; the rest of the presentation logic is in :mod:`bci.present`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hmavd.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["PsychoPyDisplay"]


def _import_psychopy():
    try:
        from psychopy import core, event, visual  # noqa: F401
    except ImportError:
        raise UserError(
            "--dry-run: a window needs PsychoPy, which is not installed; pip install 'hmavd[present]' "
            "(or pass --dry-run to present without a display)"
        ) from None
    return visual, event, core


class PsychoPyDisplay:
    """A full-screen (or windowed) PsychoPy window.

    Parameters
    ----------
    cfg : PresentConfig
        ``fullscreen``, ``screen``, ``image_size_px``, ``background``, ``photodiode``, ``photodiode_px``,
        ``refresh_hz`` (used when the measured rate is unavailable).
    files : sequence of str
        Every image the block will show (checked to exist before the window opens).
    """

    def __init__(self, cfg: Any, files: Sequence[str]) -> None:
        missing = sorted({f for f in files if f and not Path(f).exists()})
        if missing:
            raise UserError(
                f"images: {len(missing)} image files not found (e.g. {missing[0]}); fix data/image_list "
                "or present with --dry-run"
            )
        if any(not f for f in files):
            raise UserError(
                "target_image: targets are scheduled but no target image is given; pass --target-image "
                "FILE or set target_fraction=0"
            )
        visual, event, core = _import_psychopy()
        import pylsl

        self._visual, self._event, self._clock = visual, event, pylsl.local_clock
        bg = [cfg.background] * 3
        self.win = visual.Window(
            fullscr=cfg.fullscreen, screen=cfg.screen, color=bg, units="pix", allowGUI=False, waitBlanking=True
        )
        self.win.mouseVisible = False
        measured = self.win.getActualFrameRate(nIdentical=20, nMaxFrames=120, nWarmUpFrames=20)
        self.refresh_hz = float(measured) if measured else float(cfg.refresh_hz)
        log.info("display refresh rate %.3f Hz (%s)", self.refresh_hz, "measured" if measured else "configured")
        self.size = cfg.image_size_px
        self.fixation = visual.ShapeStim(self.win, vertices="cross", size=20, lineColor="white", fillColor="white")
        self.patch = None
        if cfg.photodiode != "none":
            w, h = self.win.size
            sx = -1 if "left" in cfg.photodiode else 1
            sy = 1 if "top" in cfg.photodiode else -1
            pos = (sx * (w / 2 - cfg.photodiode_px / 2), sy * (h / 2 - cfg.photodiode_px / 2))
            size = {"width": cfg.photodiode_px, "height": cfg.photodiode_px, "pos": pos}
            self.patch = visual.Rect(self.win, **size, fillColor="white", lineColor="white")
            self.patch_off = visual.Rect(self.win, **size, fillColor="black", lineColor="black")
        self._stims: dict[str, Any] = {}
        self._keys: list[tuple[str, float]] = []

    def prepare(self, files: Sequence[str]) -> None:
        """Load this sequence's images (and drop the previous ones)."""
        keep = {}
        for f in files:
            keep[f] = self._stims.get(f) or self._visual.ImageStim(self.win, image=f, size=(self.size, self.size))
        self._stims = keep

    def flip(self, file: str | None) -> float:
        if file is None:
            self.fixation.draw()
        else:
            self._stims[file].draw()
        if self.patch is not None:
            (self.patch if file is not None else self.patch_off).draw()
        self.win.flip()
        t = self._clock()
        self._poll_keys()
        return t

    def _poll_keys(self) -> None:
        for key, _ in self._event.getKeys(timeStamped=True):
            if key == "escape":
                raise KeyboardInterrupt
            self._keys.append((key, self._clock()))

    def rest(self, min_s: float) -> None:
        text = self._visual.TextStim(self.win, text="Rest. Press space to go on.", color="white")
        t_end = self._clock() + min_s
        while True:
            text.draw()
            self.win.flip()
            keys = self._event.getKeys()
            if "escape" in keys:
                raise KeyboardInterrupt
            if self._clock() >= t_end and keys:
                return

    def keys(self) -> list[tuple[str, float]]:
        out, self._keys = self._keys, []
        return out

    def close(self) -> None:
        self.win.close()
