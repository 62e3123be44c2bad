"""Test set-up: headless plotting, no telemetry, one thread per test process."""

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Start the long end-to-end tests (marked ``slow``) first, so that with ``-n 2 --dist
    loadgroup`` the run ends on short tests on both workers instead of one worker finishing a long
    test alone. Tests that share a module-scoped fixture keep their place (moving one would set the
    fixture up once more); the order is otherwise unchanged."""

    def early(item) -> bool:
        if item.get_closest_marker("slow") is None:
            return False
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            return False
        return all(defs[-1].scope in ("function", "session")
                   for defs in info.name2fixturedefs.values())

    items.sort(key=lambda item: not early(item))  # stable: the order within each part is kept
