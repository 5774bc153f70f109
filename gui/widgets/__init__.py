"""Widgets of the ``hmavd-live`` window: EEG scope, top-5 panel, prediction history, status bar."""

from .history import HistoryWidget
from .scope import ScopeWidget
from .status import ErrorBanner, StatusPanel
from .topk import TopKPanel

__all__ = ["ScopeWidget", "TopKPanel", "HistoryWidget", "StatusPanel", "ErrorBanner"]
