"""hw.systolic.floorplan: the PEs' DSP sites on the die, and the BEL constraints they become."""

import re

import pytest
from amaranth.back import rtlil
from amaranth_boards.ulx3s import ULX3S_12F_Platform, ULX3S_85F_Platform

from hw.systolic.array import SystolicArray
from hw.systolic.floorplan import DSP_SITE_ROWS, dsp_sites

SITE = re.compile(r"X(\d+)/Y(\d+)/MULT18_([0145])")


def _xy(site):
    x, y, _ = SITE.fullmatch(site).groups()
    return int(x), int(y)


@pytest.mark.parametrize("rows, cols", [(12, 12), (1, 1), (3, 17), (9, 4)])
def test_sites_are_distinct_device_sites_and_neighbours_are_close(rows, cols):
    sites = dsp_sites("LFE5U-85F", rows, cols)
    assert set(sites) == {(i, j) for i in range(rows) for j in range(cols)}
    assert len(set(sites.values())) == rows * cols
    ys, pairs = DSP_SITE_ROWS["LFE5U-85F"]
    columns = {x + offset for x in pairs for offset in (0, 1)}
    for site in sites.values():
        x, y = _xy(site)
        assert y in ys and x in columns
    band = -(-rows // len(ys))
    for (i, j), site in sites.items():
        x, y = _xy(site)
        if i + 1 < rows and (i + 1) % band:     # psum to the PE below, same DSP row
            below_x, below_y = _xy(sites[i + 1, j])
            assert below_y == y and 0 < below_x - x <= 6     # 6: across the centre
        if j + 1 < cols:                        # operand to the PE on the right
            right_x, right_y = _xy(sites[i, j + 1])
            assert right_y == y and 0 < right_x - x <= 6 * band


def test_site_names_follow_the_pair_pattern():
    sites = dsp_sites("LFE5U-85F", 12, 12)
    # Read off nextpnr's own placement of the 85F SoC.
    assert {sites[0, 0], sites[1, 0], sites[2, 0], sites[3, 0]} == {
        "X8/Y10/MULT18_4", "X9/Y10/MULT18_5", "X13/Y10/MULT18_0", "X14/Y10/MULT18_1"}
    assert sites[4, 0] == "X8/Y34/MULT18_4" and sites[11, 11] == "X115/Y58/MULT18_1"


def test_no_floorplan_without_a_table_or_room():
    assert dsp_sites("LFE5U-25F", 4, 6) is None
    assert dsp_sites(None, 4, 4) is None
    assert dsp_sites("LFE5U-85F", 12, 32) is None       # 4 rows x 32 > 52 sites per DSP row


def _bels(platform, multiplier="dsp", dsp_pes=None):
    array = SystolicArray(rows=3, cols=2, dataflow="weight_stationary", multiplier=multiplier,
                          dsp_pes=dsp_pes)
    return re.findall(r'attribute \\BEL "([^"]+)"', rtlil.convert(array, platform=platform))


def test_array_carries_the_floorplan_as_bel_attributes():
    assert sorted(_bels(ULX3S_85F_Platform())) == sorted(dsp_sites("LFE5U-85F", 3, 2).values())
    assert _bels(ULX3S_12F_Platform()) == []
    assert _bels(ULX3S_85F_Platform(), multiplier="lut") == []


def test_mixed_array_floorplans_its_dsp_pes_only():
    # 4 DSP PEs of 3x2: column 0 (3 PEs) and PE(0, 1). The fullest DSP row holds 2 at best:
    # row 0 on Y10 (PE(0, 0), PE(0, 1)), rows 1-2 on Y34 (column 0), centred on sites 25-26.
    assert sorted(_bels(ULX3S_85F_Platform(), "mixed", 4)) == sorted([
        "X59/Y10/MULT18_1", "X62/Y10/MULT18_4", "X59/Y34/MULT18_1", "X62/Y34/MULT18_4"])
    # One DSP PE: the centre site of the top DSP row.
    assert _bels(ULX3S_85F_Platform(), "mixed", 1) == ["X59/Y10/MULT18_1"]


def test_16x16_with_140_dsp_pes_splits_its_rows_unevenly():
    # Column-major: columns 0-7 and rows 0-11 of column 8 on DSPs. Equal bands of 6 rows would put
    # 9 x 6 = 54 PEs on the top DSP row (52 sites); bands of 5, 5 and 6 rows hold 45, 45, 50.
    on_dsp = {(i, j) for j in range(16) for i in range(16) if j * 16 + i < 140}
    sites = dsp_sites("LFE5U-85F", 16, 16, on_dsp)
    assert set(sites) == on_dsp and len(set(sites.values())) == 140
    rows_on = {y: {i for (i, _), site in sites.items() if _xy(site)[1] == y} for y in (10, 34, 58)}
    assert rows_on == {10: set(range(0, 5)), 34: set(range(5, 10)), 58: set(range(10, 16))}
    assert [sum(1 for site in sites.values() if _xy(site)[1] == y) for y in (10, 34, 58)] == [
        45, 45, 50]
    for (i, j), site in sites.items():
        if (i + 1, j) in sites and i + 1 not in (5, 10):    # psum hop inside a band
            below_x, below_y = _xy(sites[i + 1, j])
            assert below_y == _xy(site)[1] and 0 < below_x - _xy(site)[0] <= 6
