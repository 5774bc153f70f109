"""The paper's analyses (§4.5-4.7, Fig. 6-8, Tables 4-5), run by ``hmavd-analyze``.

* :mod:`.time_windows` — Fig. 7A, incremental forward / decremental backward / sliding windows;
* :mod:`.regions` — Fig. 7B, electrode-group ablation;
* :mod:`.gradients` — Fig. 8, per-modality gradient norms with and without MCDB;
* :mod:`.sweeps` — Tables 4-5, γ sweep and adapter reduction grid;
* :mod:`.topomaps` — Fig. 6, saliency and ERP topographies per 100 ms window;
* :mod:`.common` — :class:`AnalyzeConfig`, the train-and-score glue, CSV/PNG writers.
"""
