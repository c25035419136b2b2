"""DSP budget: only the array and the requantizer may use MULT18X18D; every per-command product
(im2col set-up, command validation, store and binary set-up) is shift-and-add."""

import pytest

from hw.memory.im2col import ConvBeatGenerator
from sim.synth import synthesize
from test_core import make_core

# Stopping after DSP mapping keeps these fast; the count is final by then.
_UP_TO_DSP_MAPPING = "-run :map_luts"


def test_conv_beat_generator_uses_no_dsp():
    cells = synthesize(ConvBeatGenerator(rows=4, cols=4, accumulator_rows=64), "im2col",
                       synth_options=_UP_TO_DSP_MAPPING, timeout=300)
    assert cells["MULT18X18D"] == 0


@pytest.mark.slow           # ~20 s: a whole (small) core through synth_ecp5 up to DSP mapping
def test_core_dsps_are_the_requantizer_lanes_only():
    core = make_core(2, 2, requant_lanes=1, multiplier="lut")
    cells = synthesize(core, "core", synth_options=_UP_TO_DSP_MAPPING, timeout=600)
    assert cells["MULT18X18D"] == 4 * core.requant_lanes
