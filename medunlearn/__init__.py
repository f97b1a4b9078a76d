"""medunlearn: machine unlearning for deployed medical-imaging classifiers.

The CLI (`medunlearn ...`) is a thin skin over this Python API.
"""
from medunlearn.data.backends import quiet_backend_notices

__version__ = "0.1.0"

quiet_backend_notices()  # optional-decoder "not available" notices go to DEBUG, once (see data/backends.py)
