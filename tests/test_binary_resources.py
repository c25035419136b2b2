"""The --resources bench path: a tiny engine goes through synth_ecp5 and the stat parser."""

from sim.bench.binary import synthesize


def test_tiny_engine_synthesizes_and_reports_cells():
    cells = synthesize(4, 1, 8, 2, timeout=300)
    # 4 XOR bits, a 3-LUT leaf popcount, masks, dot and compare: some LUTs and FFs, no EBR needed.
    assert cells["LUT4"] > 0
    assert cells["FF"] > 0
    assert set(cells) == {"LUT4", "FF", "CCU2C", "DP16KD", "DPR16X4", "PFUMX", "L6MUX21"}
