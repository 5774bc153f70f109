"""HMAVD: EEG visual decoding by EEG + image + text contrastive alignment.

Offline science lives here (data, preprocessing, features, models, training, evaluation,
analyses). The real-time engine is :mod:`bci` and the Qt application is :mod:`gui`;
imports point one way: ``gui -> bci -> hmavd``.
"""

__version__ = "0.1.0"
