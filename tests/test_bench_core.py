"""`python -m sim.bench core`: which configs it measures (the shipped preset by default, square
arrays on the device's preset with ``--arrays``), how a layer is cut into pieces that fit the
config's own memories, and one run on the compiled core of a small config (the 25F preset with a
4x4 array, CXXRTL), bit-exact with the counters' MACs equal to the layers' own math. The 85F
figures come from the bench itself, not from this test (its 12x12 model compiles ~10 min).
"""

import json

import pytest

from boards.catalog import variant
from hw.config import AcceleratorConfig, preset
from hw.core.core import geometry_from_config
from sim import cxxrtl, reference
import sim.bench.core as core_bench
from sim.bench.__main__ import main


def shipped_preset(device=None):
    return variant("ulx3s", device)[2].preset


@pytest.fixture
def benched(monkeypatch):
    """The configs and layer sets `bench_core` is called with, instead of simulating."""
    calls = []

    def bench_core(config, wanted=None, *, notes=None):
        calls.append((config, wanted))
        return [{"layer": "stand-in", "config": core_bench.config_label(config)}]

    monkeypatch.setattr(core_bench, "bench_core", bench_core)
    return calls


def test_by_default_the_shipped_preset_is_measured(benched, capsys):
    assert main(["core"]) == 0
    shipped = shipped_preset()
    [(config, wanted)] = benched
    assert config == shipped.replace(multiplier="lut", dsp_pes=None)
    assert wanted is None
    out = capsys.readouterr().out
    assert (f"{shipped.rows}x{shipped.cols} {shipped.clock_mhz:g} MHz "
            f"sp{shipped.scratchpad_rows}") in out
    assert f"scratchpad {shipped.scratchpad_rows} rows" in out


def test_device_names_a_variant_or_a_preset(benched):
    assert main(["core", "--device", "45F", "--layers", "conv1x1_16x16x64_to_64"]) == 0
    assert main(["core", "--device", "default", "--layers", "binary_256x256"]) == 0
    assert [config for config, _ in benched] == [
        shipped_preset("45F").replace(multiplier="lut"),
        preset("default").replace(multiplier="lut")]
    assert [wanted for _, wanted in benched] == [{"conv1x1_16x16x64_to_64"}, {"binary_256x256"}]


def test_arrays_sweep_square_arrays_on_the_device_preset(benched):
    assert main(["core", "--arrays", "8,12", "--layers", "gemm_64x576x64"]) == 0
    shipped = shipped_preset()
    assert [config for config, _ in benched] == [
        shipped.replace(rows=side, cols=side, multiplier="lut") for side in (8, 12)]


@pytest.mark.parametrize("argv, message", [
    (["--layers", "gemm_9x9x9"], "unknown layers ['gemm_9x9x9']"),
    (["--device", "99F"], "unknown device '99F'"),
    (["--arrays", "8,x"], "--arrays takes comma-separated integers, not '8,x'"),
    # The 85F's 64-bit binary engine reads 8-byte scratchpad rows; a 4x4 array has 4.
    (["--arrays", "4"], "binary_width must be in 8..32, not 64"),
    # The tiny preset's 256-row scratchpad: a 128-row bank, 256 weight rows per output block.
    (["--device", "tiny", "--layers", "gemm_256x256x256"],
     "gemm_256x256x256 does not fit 4x4 105 MHz sp256: one output block's weights take 256 "
     "scratchpad rows, a bank holds 128"),
    # One output row of 16 pixels reads 16 x 16 input rows and writes 16 x 1 (one block).
    (["--device", "tiny", "--layers", "conv1x1_16x16x64_to_64"],
     "one output row's inputs and outputs take 272 scratchpad rows, a bank holds 128"),
])
def test_bad_requests_stop_before_any_compile(benched, argv, message):
    with pytest.raises(SystemExit) as stopped:
        main(["core", *argv])
    assert message in str(stopped.value)
    assert benched == []


def memory_use(geometry, piece, rows, cols):
    """(weight rows, input + output rows) of `piece`, from the layouts of `hw.core.isa`: R rows
    per (output block, tap, input block) tile; a pixel's input in ceil(cin/R) rows, its output in
    one row per output block."""
    cin_blocks = -(-geometry["cin"] // rows)
    blocks = -(-len(piece.channels) // cols)
    out_w = reference.conv_output_size(geometry["in_w"], geometry.get("kw", 1), 1,
                                       *geometry.get("padding", (0, 0, 0, 0))[2:])
    weights = blocks * geometry.get("kh", 1) * geometry.get("kw", 1) * cin_blocks * rows
    return weights, (len(piece.in_rows) * geometry["in_w"] * cin_blocks
                     + len(piece.out_rows) * out_w * blocks)


CONFIGS = {name: shipped_preset(name) for name in ("85F", "45F", "25F")}
CONFIGS["25F, 4x4"] = CONFIGS["25F"].replace(rows=4, cols=4)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
@pytest.mark.parametrize("name", core_bench.INT8_LAYERS)
def test_pieces_cover_the_layer_once_and_fit_the_banks(config, name):
    geometry, _ = core_bench.INT8_LAYERS[name]
    pieces = core_bench.layer_pieces(geometry, geometry_from_config(config))
    kh, top = geometry.get("kh", 1), geometry.get("padding", (0, 0, 0, 0))[0]
    out_h = reference.conv_output_size(geometry["in_h"], kh, 1, *geometry.get("padding",
                                                                             (0, 0, 0, 0))[:2])
    covered = [(row, channel) for piece in pieces for row in piece.out_rows
               for channel in piece.channels]
    assert sorted(covered) == [(row, channel) for row in range(out_h)
                               for channel in range(geometry["cout"])]
    for piece in pieces:
        weights, activations = memory_use(geometry, piece, config.rows, config.cols)
        assert max(weights, activations) <= config.scratchpad_rows // 2
        bottom = piece.padding[1]
        # The piece's input rows with its padding are exactly the rows its output rows read.
        assert piece.in_rows.start - piece.padding[0] == piece.out_rows.start - top
        assert piece.in_rows.stop + bottom == piece.out_rows.stop - 1 - top + kh
        assert 0 <= piece.in_rows.start < piece.in_rows.stop <= geometry["in_h"]


def test_a_layer_that_fits_is_one_piece_and_one_that_does_not_is_cut():
    core = geometry_from_config(AcceleratorConfig(rows=12, cols=12, scratchpad_rows=16384))
    # GEMM 256^3 on 12x12: weights 22 blocks x 22 K blocks x 12 rows = 5,808 rows fit the
    # 8,192-row bank; inputs + outputs 2 x 256 x 22 = 11,264 do not: M bands of at most 186 rows.
    gemm = core_bench.layer_pieces(core_bench.INT8_LAYERS["gemm_256x256x256"][0], core)
    assert [(piece.out_rows, piece.channels) for piece in gemm] == [
        (range(0, 128), range(256)), (range(128, 256), range(256))]
    [conv] = core_bench.layer_pieces(
        core_bench.INT8_LAYERS["conv3x3_16x16x64_to_64_s1_p1"][0], core)
    assert conv == core_bench.Piece(range(16), range(64), range(16), (1, 1, 1, 1))


def test_a_band_of_a_padded_conv_reads_its_halo():
    # 3x3 conv 16x16x32 -> 32 on 4x6 with 1,024-row banks: 9 x 8 x 4 = 288 weight rows per
    # output block of 6 channels, so 3 of the 6 blocks a bank: 2 groups (18 + 14 channels). A
    # band of 4 output rows reads 6 input rows of 8 rows each and writes 4 x 16 x 3 output rows:
    # 960 rows (5 would take 1,136); at the edges it reads 5, the padding being the sixth.
    core = geometry_from_config(AcceleratorConfig(rows=4, cols=6, requant_lanes=1,
                                                  scratchpad_rows=2048, binary_width=32))
    pieces = core_bench.layer_pieces(
        core_bench.INT8_LAYERS["conv3x3_16x16x32_to_32_s1_p1"][0], core)
    assert [(piece.out_rows, piece.in_rows, piece.padding) for piece in pieces[:4]] == [
        (range(0, 4), range(0, 5), (1, 0, 1, 1)), (range(4, 8), range(3, 9), (0, 0, 1, 1)),
        (range(8, 12), range(7, 13), (0, 0, 1, 1)), (range(12, 16), range(11, 16), (0, 1, 1, 1))]
    assert [piece.channels for piece in pieces] == [range(0, 18)] * 4 + [range(18, 32)] * 4


@pytest.mark.slow           # one CXXRTL compile of a 4x4 core (~2 min), then ~10 s
@pytest.mark.skipif(not cxxrtl.available(), reason=str(cxxrtl.unavailable_reason()))
def test_a_streamed_run_on_a_small_config_is_bit_exact(capsys):
    layers = ["conv3x3_16x16x32_to_32_s1_p1", "conv1x1_16x16x64_to_64", "binary_256x256"]
    assert main(["core", "--device", "25F", "--arrays", "4", "--layers", ",".join(layers),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    config = shipped_preset("25F")
    label = f"4x4 {config.clock_mhz:g} MHz sp{config.scratchpad_rows}"
    rows = {row["layer"]: row for row in result["rows"]}
    assert list(rows) == layers
    assert all(row["bit_exact"] and row["config"] == label for row in rows.values())
    # Useful MACs: output pixels x taps x input channels x output channels.
    assert rows[layers[0]]["macs"] == 16 * 16 * 9 * 32 * 32
    assert rows[layers[1]]["macs"] == 16 * 16 * 64 * 64
    assert rows["binary_256x256"]["binary_ops"] == 2 * 256 * 256 * 64
    for row in rows.values():
        assert row["pieces"] > 1, "none of these layers fits a 2,048-row scratchpad at once"
        assert 0 < row["utilization"] <= 1
    assert rows[layers[1]]["utilization"] == round(
        rows[layers[1]]["macs"] / (16 * rows[layers[1]]["active_cycles"]), 4)
    assert sum("streamed in" in note for note in result["notes"]) == 2
