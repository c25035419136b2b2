"""The --resources bench path: a tiny engine goes through sim.synth (synth_ecp5 and the stat
parser)."""

from hw.binary import BinaryEngine
from sim.synth import synthesize


def test_tiny_engine_synthesizes_and_reports_cells():
    cells = synthesize(BinaryEngine(width=4, lanes=1, max_k=8, max_n=2), "binary_engine",
                       timeout=300)
    # 4 XOR bits, a 3-LUT leaf popcount, masks, dot and compare: some LUTs and FFs, no DSP.
    assert cells["LUT4"] > 0
    assert cells["FF"] > 0
    assert cells["MULT18X18D"] == 0
    assert set(cells) == {"LUT4", "FF", "CCU2C", "DP16KD", "DPR16X4", "MULT18X18D", "PFUMX",
                          "L6MUX21"}
