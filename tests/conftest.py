"""Test set-up: headless plotting, no telemetry, one thread per test process."""

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
