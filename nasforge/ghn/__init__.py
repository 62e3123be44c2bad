"""nasforge.ghn: graph hypernetworks (GHN-2) that predict every parameter of a network.

``ghn = nasforge.ghn.load(path); model = ghn(model)`` fills ``model`` in place (docs/ghn.md).
"""

from .model import GHN, GHNConfig, load  # noqa: F401
