"""medunlearn: machine unlearning for deployed medical-imaging classifiers.

The CLI (`medunlearn ...`) is a thin skin over this Python API.
"""
__version__ = "0.1.0"
