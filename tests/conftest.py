"""Shared pytest set-up: offscreen Qt, few threads, no network."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MNE_DONTWRITE_HOME", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: Real third-party reference data (CLIP features, concept lists, real EEG) live outside the project, in a
#: ``shared/data`` folder beside the checkout; ``HMAVD_SHARED_DATA`` points elsewhere. Never copied in.
SHARED_DATA = Path(os.environ.get("HMAVD_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real reference data, or a clean skip that says where it was looked for.

    Every test that needs real third-party data (real CLIP geometry, the real ThingsEEG2 concept lists,
    the real EEG recordings in ``real-eeg/``) takes this fixture; the logic those tests guard is also
    tested on generated inputs that always run.
    """
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (set HMAVD_SHARED_DATA to the shared/data folder)")
    return SHARED_DATA


def pytest_configure(config):
    """No tqdm monitor thread: it wakes every 10 s in the background and, when its allocations trigger
    Python's cyclic garbage collector, Qt objects of earlier GUI tests would be destroyed outside the GUI
    thread (a segfault in the next event processing; seen once in the full suite)."""
    try:
        import tqdm

        tqdm.tqdm.monitor_interval = 0
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield


def pytest_collection_modifyitems(config, items):
    """Skip GPU-marked tests cleanly where no CUDA device exists."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
