"""Widgets of the ``hmavd-live`` window: EEG scope, top-5 panel, repetition curve, history, status bar."""

from .curve import RepetitionCurveWidget
from .history import HistoryWidget
from .scope import ScopeWidget
from .status import ErrorBanner, StatusPanel
from .topk import TopKPanel

__all__ = ["ScopeWidget", "TopKPanel", "RepetitionCurveWidget", "HistoryWidget", "StatusPanel", "ErrorBanner"]
