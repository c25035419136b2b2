"""Binary (W1A1) XNOR-popcount engine: pipelined popcount trees, folding, threshold unit, and
the packer that writes threshold bits back as the next layer's input rows."""

from .engine import BinaryEngine, clamp_thresholds
from .packer import BitPacker
from .popcount import PopcountTree, popcount_latency

__all__ = ["BinaryEngine", "BitPacker", "PopcountTree", "clamp_thresholds",
           "popcount_latency"]
