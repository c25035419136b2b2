"""Board table, device budgets, presets and the resource budget check."""

import pytest

from boards import (BOARDS, DEVICES, BudgetError, board, check_budget, device, ebr_blocks,
                    estimate_resources, variant)
from boards.budget import (DESIGN_NAMES, LUT_COST, LUT_MULTIPLIER_MAX_MHZ, REQUANT_DSPS_PER_LANE,
                           fit_multipliers)
from hw.config import AcceleratorConfig
from hw.soc.pll import pll_parameters
from hw.soc.uart import MIN_DIVISOR
from hw.soc.top import DESIGNS

ALL_VARIANTS = [(b.name, name) for b in BOARDS.values() for name in b.variants]


@pytest.mark.parametrize("name, luts, dsps, ebrs", [
    # Datasheet figures; nextpnr --report lists the same for 25k/45k/85k (12F: see devices.py).
    ("LFE5U-12F", 12_096, 28, 32),
    ("LFE5U-25F", 24_288, 28, 56),
    ("LFE5U-45F", 43_848, 72, 108),
    ("LFE5U-85F", 83_640, 156, 208),
])
def test_device_budgets(name, luts, dsps, ebrs):
    part = device(name)
    assert (part.luts, part.dsps, part.ebrs, part.ffs) == (luts, dsps, ebrs, luts)
    assert part.serdes_channels == 0


def test_serdes_devices_are_described():
    assert DEVICES["LFE5UM-45F"].serdes_channels == 4
    assert DEVICES["LFE5UM5G-85F"].serdes_channels == 4


@pytest.mark.parametrize("board_name, variant_name", ALL_VARIANTS)
def test_variant_platform_resources(board_name, variant_name):
    selected = BOARDS[board_name]
    entry = selected.variants[variant_name]
    platform = entry.platform()
    assert platform.device == entry.device.name
    clock = platform.lookup(selected.clock_resource, 0)
    assert clock.clock.frequency == selected.clock_hz
    uart = platform.lookup(selected.uart.resource, selected.uart.number)
    assert {sub.name for sub in uart.ios} >= {"rx", "tx"}
    for index in range(selected.led_count):
        platform.lookup(selected.led_resource, index)


@pytest.mark.parametrize("board_name, variant_name", ALL_VARIANTS)
def test_preset_fits_its_device(board_name, variant_name):
    selected = BOARDS[board_name]
    entry = selected.variants[variant_name]
    config = entry.preset
    assert isinstance(config, AcceleratorConfig)
    estimate = check_budget(config, entry.device, entry.design)
    expected_dsps = (config.rows * config.cols if config.multiplier == "dsp" else 0) \
        + REQUANT_DSPS_PER_LANE * config.requant_lanes
    assert estimate.dsps == expected_dsps <= entry.device.dsps
    assert estimate.ebrs <= entry.device.ebrs
    assert estimate.luts <= entry.device.luts
    # Fills the device: no room left for another DSP row or column.
    assert expected_dsps + min(config.rows, config.cols) > entry.device.dsps
    # The clock is exactly reachable and the UART has enough cycles per bit to sample mid-bit.
    pll_parameters(selected.clock_hz, config.clock_hz)
    assert config.clock_hz >= MIN_DIVISOR * config.uart_baud
    assert config.uart_baud <= selected.uart.max_baud


def test_soc_on_the_12f_is_over_budget_and_the_12f_defaults_to_bringup():
    _, _, entry = variant("ulx3s", "12F")
    assert entry.design == "bringup"
    with pytest.raises(BudgetError) as info:
        check_budget(entry.preset, entry.device, "soc")
    message = str(info.value)
    assert "(soc design) does not fit LFE5U-12F" in message
    assert "LUT4 (estimate): needs" in message and "LFE5U-12F has 12096" in message
    assert "DP16KD: needs" in message and "LFE5U-12F has 32" in message
    assert all(entry.design == "soc" for name, entry in BOARDS["ulx3s"].variants.items()
               if name != "12F")


def test_budget_knows_every_design():
    # boards.budget cannot import hw.soc.top (which imports it), so it lists the names itself.
    assert set(DESIGN_NAMES) == set(DESIGNS)


def test_unknown_design_is_rejected():
    with pytest.raises(ValueError, match=r"design must be one of \('bringup', 'soc'\), not 'cpu'"):
        estimate_resources(variant("ulx3s")[2].preset, "cpu")


def test_ulx3s_85f_preset_is_12x12():
    _, name, entry = variant("ulx3s")
    assert name == "85F"
    assert (entry.preset.rows, entry.preset.cols, entry.preset.multiplier) == (12, 12, "dsp")


@pytest.mark.parametrize("device_name", ["85F", "85f", "LFE5U-85F"])
def test_variant_names(device_name):
    assert variant("ulx3s", device_name)[1] == "85F"


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="Unknown board 'vesa'.*ulx3s"):
        board("vesa")
    with pytest.raises(ValueError, match="Unknown device '100F'.*12F, 25F, 45F, 85F"):
        variant("ulx3s", "100F")
    with pytest.raises(ValueError, match="Unknown ECP5 device.*LFE5U-85F"):
        device("LFE5U-99F")


@pytest.mark.parametrize("depth, width, blocks", [
    (512, 36, 1), (513, 36, 2), (512, 37, 2), (1024, 18, 1), (2048, 9, 1), (2048, 8, 1),
    (16384, 1, 1), (4096, 96, 22), (1024, 384, 22), (512, 1024, 29), (16, 8, 1),
])
def test_ebr_blocks(depth, width, blocks):
    assert ebr_blocks(depth, width) == blocks


@pytest.mark.parametrize("depth, width, groups, blocks", [
    (256, 64, 16, 32),      # 64 bits = 8 bytes of 9: two 512x36 blocks (4 bytes) per group
    (16, 12, 16, 8),        # 12 bits = 2 bytes: two groups per block
    (512, 9, 8, 2),         # one byte each, four per block
    (2048, 9, 3, 3),        # 2048x9 has one byte: a block per group
    (4096, 4, 3, 3),        # 4096x4 has no byte enable: a block per group
])
def test_ebr_blocks_of_a_memory_written_in_groups(depth, width, groups, blocks):
    assert ebr_blocks(depth, width, write_groups=groups) == blocks


@pytest.mark.parametrize("device_name, changes, blocks", [
    ("85F", {}, 198),       # session 15 build (nextpnr: 198/208)
    ("45F", {}, 80),        # session 14 build
    ("25F", {}, 54),        # session 14 build
    # 16x16 mixed with the 12x12 preset's 16,384-row scratchpad, 1,024 accumulator rows, 256
    # binary result rows and 512 parameter entries: yosys's netlist has 208 (session 16; the
    # array's 40-row result FIFO in distributed RAM, 9 blocks before).
    ("85F", dict(rows=16, cols=16, multiplier="mixed", dsp_pes=140, requant_lanes=4,
                 accumulator_rows=1024, binary_result_rows=256, parameter_rows=512), 208),
])
def test_block_ram_estimate_equals_the_builds(device_name, changes, blocks):
    config = variant("ulx3s", device_name)[2].preset.replace(**changes)
    assert estimate_resources(config).ebrs == blocks


def test_dsp_overflow_names_resource_and_excess():
    config = variant("ulx3s", "85F")[2].preset.replace(rows=13)
    with pytest.raises(BudgetError, match=r"MULT18X18D: needs 164, LFE5U-85F has 156 \(over by 8"):
        check_budget(config, device("LFE5U-85F"))


def test_lut_multiplier_uses_no_array_dsps():
    config = variant("ulx3s", "85F")[2].preset.replace(rows=16, cols=16, multiplier="lut")
    estimate = estimate_resources(config)
    assert estimate.dsps == REQUANT_DSPS_PER_LANE * config.requant_lanes
    # 256 fabric multipliers are over the 85F's LUT4s; the message names the splits that fit.
    with pytest.raises(BudgetError, match=r"LUT4 \(estimate\): needs \d+, LFE5U-85F has 83640 .*"
                                          r"put more PEs on a MULT18X18D \(\d+\.\.148 DSP PEs fit"):
        check_budget(config, device("LFE5U-85F"))


def test_mixed_split_over_the_dsps_says_what_fits():
    config = variant("ulx3s", "85F")[2].preset.replace(rows=16, cols=16, multiplier="mixed",
                                                       dsp_pes=150)
    with pytest.raises(BudgetError) as info:
        check_budget(config, device("LFE5U-85F"))
    # 156 DSPs, 8 of them the two requant lanes': 148 PEs at most.
    assert "MULT18X18D: needs 158, LFE5U-85F has 156 (over by 2;" in str(info.value)
    assert "..148 DSP PEs fit" in str(info.value)


def test_85f_mixed_16x16_estimate():
    """The issue's 85F array: 16x16 with 148 PEs on the DSPs, 108 in the fabric (and the
    scratchpad's 16-lane rows in 8,192 rows: the 12x12 preset's 16,384 would need 128 DP16KD)."""
    config = variant("ulx3s", "85F")[2].preset.replace(rows=16, cols=16, multiplier="mixed",
                                                       dsp_pes=148, scratchpad_rows=8192)
    estimate = check_budget(config, device("LFE5U-85F"))
    assert estimate.dsps == 148 + REQUANT_DSPS_PER_LANE * config.requant_lanes == 156
    assert estimate.detail["array"]["luts"] == \
        256 * LUT_COST["pe_dsp"] + 108 * LUT_COST["pe_lut_multiplier"]


def test_fit_multipliers_takes_every_dsp_left():
    preset = variant("ulx3s", "85F")[2].preset
    part = device("LFE5U-85F")
    assert fit_multipliers(preset.replace(rows=16, cols=16), part) == \
        preset.replace(rows=16, cols=16, multiplier="mixed", dsp_pes=148)
    assert fit_multipliers(preset.replace(rows=4, cols=4, multiplier="lut"), part) == \
        preset.replace(rows=4, cols=4, multiplier="dsp")
    tight = preset.replace(rows=4, cols=4, requant_lanes=4)
    assert fit_multipliers(tight, device("LFE5U-12F")) == \
        tight.replace(multiplier="mixed", dsp_pes=12)


def test_mixed_split_over_the_luts_says_what_fits():
    config = variant("ulx3s", "12F")[2].preset.replace(rows=12, cols=12, multiplier="mixed",
                                                       dsp_pes=4)
    with pytest.raises(BudgetError) as info:
        check_budget(config, device("LFE5U-12F"))
    message = str(info.value)
    assert "LUT4 (estimate): needs" in message and "or put more PEs on a MULT18X18D" in message


def test_fabric_multipliers_refuse_a_clock_they_were_not_measured_at():
    entry = variant("ulx3s", "12F")[2]
    config = entry.preset.replace(rows=4, cols=4, multiplier="mixed", dsp_pes=8,
                                  clock_mhz=LUT_MULTIPLIER_MAX_MHZ + 10)
    with pytest.raises(BudgetError) as info:
        check_budget(config, entry.device, entry.design)
    assert "over by 10.00 MHz" in str(info.value)
    assert f"use a clock <= {LUT_MULTIPLIER_MAX_MHZ:g} MHz" in str(info.value)
    check_budget(config.replace(multiplier="dsp", dsp_pes=None), entry.device, entry.design)
    check_budget(config.replace(clock_mhz=LUT_MULTIPLIER_MAX_MHZ), entry.device, entry.design)


def test_lut_overflow_is_reported():
    config = variant("ulx3s", "12F")[2].preset.replace(rows=32, cols=32, multiplier="lut")
    with pytest.raises(BudgetError, match=r"LUT4 \(estimate\): needs \d+, LFE5U-12F has 12096"):
        check_budget(config, device("LFE5U-12F"))


@pytest.mark.parametrize("design, fields", [
    ("soc", "scratchpad_rows, accumulator_rows, binary_result_rows, parameter_rows"),
    ("bringup", "scratchpad_rows, accumulator_rows"),   # no parameter or binary result memory
])
def test_block_ram_overflow_names_the_sizes_of_the_designs_own_memories(design, fields):
    config = variant("ulx3s", "85F")[2].preset.replace(scratchpad_rows=65536)
    with pytest.raises(BudgetError, match=rf"; reduce {fields} or binary_width\*binary_lanes\)"):
        check_budget(config, device("LFE5U-85F"), design)


def test_every_overflow_is_listed_at_once():
    config = variant("ulx3s", "12F")[2].preset.replace(rows=8, cols=8, scratchpad_rows=65536)
    with pytest.raises(BudgetError) as info:
        check_budget(config, device("LFE5U-12F"))
    message = str(info.value)
    assert "MULT18X18D: needs 68" in message
    assert f"DP16KD: needs {estimate_resources(config).ebrs}, LFE5U-12F has 32" in message
