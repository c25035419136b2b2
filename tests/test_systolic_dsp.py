# amaranth: UnusedElaboratable=no
"""The DSP and LUT mappings of the systolic PE, checked with yosys.

* The `MULT18X18D` instance (what the board build gets) is formally equivalent to the behavioural
  two-register model pysim runs, using a MULT18X18D model written from Lattice's sysDSP guide
  (tests/models/mult18x18d.v; yosys ships the primitive only as a blackbox) and the LUT4s that
  drive its control pins (tests/models/lut4.v). The LUT mapping (`LutMultiplier`) is proved
  equivalent to the same behavioural model: the same product in the same cycle, for every
  operand pair.
* `synth_ecp5` maps a small "dsp" array onto exactly R*C MULT18X18D, a "lut" one onto none and a
  "mixed" one onto its dsp_pes; the fabric multiplier onto LUT4s and CCU2C carry cells, apart
  from the logic in front of it.
"""

import os
import random
import re
import subprocess
import tempfile

import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from boards.budget import LUT_MULTIPLIER_FFS
from hw.systolic.array import SystolicArray
from hw.systolic.lut_multiplier import LutMultiplier
from hw.systolic.pe import MULT18X18D_PARAMETERS, Multiplier
from sim.synth import YOSYS, synthesize

MODELS = {name: os.path.join(os.path.dirname(__file__), "models", name)
          for name in ("mult18x18d.v", "lut4.v")}


def _models():
    models = {}
    for name, path in MODELS.items():
        with open(path) as file:
            models[name] = file.read()
    return models


def _yosys(script, files):
    with tempfile.TemporaryDirectory() as folder:
        for name, text in files.items():
            with open(os.path.join(folder, name), "w") as file:
                file.write(text)
        completed = subprocess.run(YOSYS + ["-p", script], cwd=folder, capture_output=True,
                                   text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed.stdout


def _multiplier_rtlil(mapping, name, platform, **shapes):
    multiplier = Multiplier(mapping=mapping, **shapes)
    return rtlil.convert(multiplier, name=name, platform=platform)


def test_dsp_instance_uses_only_modelled_features():
    text = _multiplier_rtlil("dsp", "dsp_multiplier", ULX3S_85F_Platform())
    parameters = dict(re.findall(r'parameter \\(\w+) "([^"]*)"', text))
    assert parameters == MULT18X18D_PARAMETERS == {
        "REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0", "REG_OUTPUT_CLK": "CLK0"}
    connected = set(re.findall(r"connect \\(\w+) ", text.split("cell \\MULT18X18D")[1]
                               .split("end")[0]))
    unmodelled = {port for port in connected
                  if re.fullmatch(r"(CLK|CE|RST)[123]|SRI[AB]\d+|SRO[AB]\d+|RO[ABC]\d+", port)}
    assert not unmodelled
    assert {"CLK0", "CE0", "RST0", "SIGNEDA", "SIGNEDB", "A0", "B17", "P15"} <= connected
    # The control pins' constants are two LUT4s of the multiplier's own, all ones and all zeros.
    inits = re.findall(r"cell \\LUT4 \S+\n\s*parameter \\INIT 16'([01]+)", text)
    assert sorted(inits) == ["0" * 16, "1" * 16]


def _assert_equivalent_to_behavioural(mapping, models):
    """SAT proof that `Multiplier(mapping=...)` as built for the 85F and the behavioural model
    (``a * b`` between two registers) give the same product every cycle; `models` are the cell
    models (`MODELS` file names) the built side instantiates."""
    mapped = _multiplier_rtlil(mapping, "mapped", ULX3S_85F_Platform())
    behavioural = _multiplier_rtlil("dsp", "behavioural", None)
    read_models = f"read_verilog {' '.join(models)}; " if models else ""
    output = _yosys(
        read_models + "read_rtlil mapped.il; hierarchy -check -top mapped; "
        "read_rtlil behavioural.il; proc; "
        "miter -equiv -flatten -make_outputs behavioural mapped miter; hierarchy -top miter; "
        # Both sides are 2-register pipelines from a zero state: at step 3 the outputs depend on
        # arbitrary inputs of step 1 only, so a 3-step bounded proof covers every operand pair.
        "sat -verify -seq 3 -prove trigger 0 -set-init-zero -show-inputs miter",
        {**{name: text for name, text in _models().items() if name in models},
         "mapped.il": mapped, "behavioural.il": behavioural})
    assert "SUCCESS!" in output, output[-3000:]


@pytest.mark.slow          # 30-80 s: SAT proof that two 8x8 multipliers agree
def test_dsp_multiplier_equivalent_to_behavioural_model():
    _assert_equivalent_to_behavioural("dsp", ["mult18x18d.v", "lut4.v"])


@pytest.mark.slow          # SAT proof that two 8x8 multipliers agree
def test_lut_multiplier_equivalent_to_behavioural_model():
    _assert_equivalent_to_behavioural("lut", [])


# The requantizer's four partial products (hw.systolic.requant): too wide for a SAT proof over
# every operand pair, so the instance is checked against the model on the corner values and random
# pairs, each a 3-step run with fixed inputs (constant propagation, fast).
@pytest.mark.parametrize("a_shape, b_shape", [
    (unsigned(17), unsigned(17)), (unsigned(17), unsigned(14)),
    (signed(15), unsigned(17)), (signed(15), unsigned(14)),
])
def test_wide_dsp_multiplier_matches_behavioural_model(a_shape, b_shape):
    shapes = {"a_shape": a_shape, "b_shape": b_shape}
    mapped = _multiplier_rtlil("dsp", "mapped", ULX3S_85F_Platform(), **shapes)
    behavioural = _multiplier_rtlil("dsp", "behavioural", None, **shapes)

    def corners(shape):
        low, high = (-(1 << shape.width - 1), (1 << shape.width - 1) - 1) if shape.signed \
            else (0, (1 << shape.width) - 1)
        rng = random.Random(shape.width)
        return [low, high, 0, 1, -1 if shape.signed else 2] + \
            [rng.randint(low, high) for _ in range(6)]

    checks = " ".join(
        f"sat -verify -seq 3 -set-at 1 in_a {a % (1 << a_shape.width)} "
        f"-set-at 1 in_b {b % (1 << b_shape.width)} -prove trigger 0 -set-init-zero miter;"
        for a, b in zip(corners(a_shape), corners(b_shape)))
    output = _yosys(
        "read_verilog mult18x18d.v lut4.v; read_rtlil mapped.il; hierarchy -check -top mapped; "
        "read_rtlil behavioural.il; proc; "
        "miter -equiv -flatten -make_outputs behavioural mapped miter; hierarchy -top miter; "
        + checks,
        {**_models(), "mapped.il": mapped, "behavioural.il": behavioural})
    assert output.count("SUCCESS!") == len(corners(a_shape)), output[-3000:]


@pytest.mark.parametrize("shape", [signed(19), unsigned(18), unsigned(0)])
def test_multiplier_rejects_operands_wider_than_the_dsp(shape):
    with pytest.raises(ValueError, match="must fit a signed 18-bit DSP port"):
        Multiplier(mapping="dsp", a_shape=shape)


def _synthesized_dsp_count(multiplier, dataflow, dsp_pes):
    array = SystolicArray(rows=2, cols=3, dataflow=dataflow, multiplier=multiplier,
                          dsp_pes=dsp_pes)
    # DSP mapping is done before LUT mapping; stopping there keeps the test fast.
    cells = synthesize(array, "array", synth_options="-run :map_luts",
                       platform=ULX3S_85F_Platform(), timeout=300)
    return cells["MULT18X18D"]


@pytest.mark.parametrize("multiplier, dsp_pes, dataflow, expected", [
    ("dsp", None, "output_stationary", 2 * 3),
    ("lut", None, "weight_stationary", 0),
    ("mixed", 4, "weight_stationary", 4),
])
def test_synth_ecp5_dsp_count(multiplier, dsp_pes, dataflow, expected):
    assert _synthesized_dsp_count(multiplier, dataflow, dsp_pes) == expected


def test_lut_multiplier_maps_onto_luts_and_carry_chains():
    cells = synthesize(LutMultiplier(), "lut_multiplier", platform=ULX3S_85F_Platform(),
                       timeout=300)
    assert cells.get("MULT18X18D", 0) == 0
    assert cells["CCU2C"] > 0 and cells["LUT4"] > 0
    assert cells["FF"] == LUT_MULTIPLIER_FFS


def test_fabric_multiplier_is_mapped_apart_from_the_weight_select():
    """`OWN_MAPPING`: ABC9 keeps a weight-stationary PE's weight select out of the fabric
    multiplier's partial products, which stay one LUT4 each (no LUT5s: PFUMX)."""
    cells = {multiplier: synthesize(SystolicArray(rows=2, cols=2, dataflow="weight_stationary",
                                                  multiplier=multiplier),
                                    "array", platform=ULX3S_85F_Platform(), timeout=300)
             for multiplier in ("dsp", "lut")}
    assert cells["lut"]["PFUMX"] == cells["dsp"]["PFUMX"]
    assert cells["lut"]["LUT4"] - cells["dsp"]["LUT4"] <= 4 * 64
