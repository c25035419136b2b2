"""Binary (W1A1) XNOR-popcount engine: pipelined popcount trees, folding, threshold unit."""

from .engine import BinaryEngine, clamp_thresholds
from .popcount import PopcountTree, popcount_latency

__all__ = ["BinaryEngine", "PopcountTree", "clamp_thresholds",
           "popcount_latency"]
