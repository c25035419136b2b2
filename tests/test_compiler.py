"""The compiler (`sw.compiler`) and `Accelerator.load`: placements, liveness, resident weights,
host steps, the program file, and networks run on the simulated device bit-exact with
`sw.graph.run_reference`.

Planner tests need no device (they compile for the ``tiny`` preset's geometry); device tests
run on ``sim://tiny`` (pysim: 4x4 array, scratchpad 256 rows, accumulator 64 rows) and are kept
to a handful of commands each.
"""

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st

from hw.config import preset
from hw.core.isa import Opcode, decode
from sim import reference
from sw.compiler import LOWERINGS, DeviceGeometry, DoesNotFit, Program, compile_graph
from sw.compiler.layout import (ConvLayer, column_fold_shape, fold_columns, output_bands,
                                schedule_cycles, schedule_tiles, tile_cycles)
from sw.driver import Accelerator, DeviceMismatch, LinkError
from sw.graph import GraphBuilder, run_reference
from sw.ops import OPERATIONS, Add, BinaryDense, Conv2D, Dense, DenseInt32, Flatten, Sign, Softmax

TINY = DeviceGeometry(preset("tiny"))


@pytest.fixture(scope="module")
def device():
    accelerator = Accelerator.open("sim://tiny")
    yield accelerator
    accelerator.close()


def _requant(rng, channels):
    multiplier, shift = zip(*(reference.quantize_multiplier(float(scale))
                              for scale in rng.uniform(1e-3, 1e-2, channels)))
    return dict(bias=rng.integers(-2000, 2000, channels), multiplier=np.array(multiplier),
                shift=np.array(shift))


def _dense(rng, k, n, input_zero_point=0, output_zero_point=0, **fields):
    return Dense(weights=rng.integers(-128, 128, (k, n)), input_zero_point=input_zero_point,
                 output_zero_point=output_zero_point, **_requant(rng, n), **fields)


def mlp(rng, sizes=(10, 7, 5)):
    builder = GraphBuilder()
    tensor = builder.input("x", (sizes[0],), scale=0.1, zero_point=3)
    zero_point = 3
    for index, (k, n) in enumerate(zip(sizes, sizes[1:])):
        tensor = builder.node(f"dense{index}", _dense(rng, k, n, zero_point, -5, act_min=-5),
                              [tensor], scale=0.1)
        zero_point = -5
    return builder.build([tensor])


def cnn(rng, cout=4):
    builder = GraphBuilder()
    x = builder.input("x", (4, 4, 1), scale=0.05, zero_point=-3)
    conv = builder.node("conv", Conv2D(
        weights=rng.integers(-128, 128, (3, 3, 1, cout)), padding=(1, 1, 1, 1),
        input_zero_point=-3, output_zero_point=-128, act_min=-128, pool=True,
        **_requant(rng, cout)), [x], scale=0.1)
    flat = builder.node("flatten", Flatten(), [conv])
    dense = builder.node("dense", _dense(rng, 4 * cout, 3, -128, 2), [flat], scale=0.2)
    return builder.build([dense])


def mixed(rng, last="dots"):
    """A FINN-style mixed network: INT8 Dense -> Sign (host) -> three binary hidden layers (k
    and n not multiples of the 32-bit width or the 4 lanes) -> a binary integer-dot output layer
    (`last` "dots") or an INT8 Dense ("int8")."""
    builder = GraphBuilder()
    x = builder.input("x", (10,), scale=0.1, zero_point=3)
    first = builder.node("first", _dense(rng, 10, 40, 3, 0), [x], scale=0.1)
    tensor = builder.node("sign", Sign(thresholds=rng.integers(-20, 20, 40)), [first])
    for index, (k, n) in enumerate(((40, 37), (37, 70), (70, 33))):
        tensor = builder.node(f"hidden{index}", BinaryDense(
            weights=rng.choice([-1, 1], (n, k)), thresholds=rng.integers(-6, 7, n),
            ascending=rng.integers(0, 2, n).astype(bool)), [tensor])
    if last == "dots":
        out = builder.node("out", BinaryDense(weights=rng.choice([-1, 1], (5, 33))), [tensor])
    else:
        out = builder.node("out", _dense(rng, 33, 5, 0, 2), [tensor], scale=0.2)
    return builder.build([out])


HIDDEN = ("hidden0", "hidden1", "hidden2")


def _binary_commands(program, node):
    return [fields for step in program.steps if step.kind == "commands" and step.node == node
            for opcode, fields in map(decode, step.data) if opcode == Opcode.BINARY]


def _stores(program, node):
    return [fields for step in program.steps if step.kind == "commands" and step.node == node
            for opcode, fields in map(decode, step.data) if opcode == Opcode.REQUANT_STORE]


# Planner -----------------------------------------------------------------------------------------

def test_every_node_kind_has_a_lowering():
    assert set(LOWERINGS) == {kind.__name__ for kind in OPERATIONS}


def test_activations_are_freed_after_their_last_reader():
    # x (3 rows per sample) -> d0 -> d1 -> d2, two samples per round: x lives at rows 0..5
    # until d0 has read it (d0 stores at 6..9), so d1's output reuses rows 0..3; d2's output
    # goes to the first free rows after it, 4..5 (x and d0 are both dead by then). Each layer's
    # column blocks of 4 lanes are stored from its first row, block b at offset b in the
    # pixel-major rows: d0 (two blocks) from 6, d1 (two) from 0, d2 (one) at 4.
    program = compile_graph(mlp(np.random.default_rng(0), (10, 8, 8, 4)), TINY, batch=2)
    (write,) = [step for step in program.steps if step.kind == "write"]
    assert (write.args["tensor"], write.args["base_row"]) == ("x", 0)
    assert [(store["out_base"] + block) for node in ("dense0", "dense1", "dense2")
            for store in _stores(program, node)
            for block in range(store["n_blocks"])] == [6, 7, 0, 1, 4]
    (read,) = [step for step in program.steps if step.kind == "read"]
    assert (read.args["tensor"], read.args["base_row"]) == ("dense2", 4)


def test_layers_hand_over_through_the_host_when_row_layouts_differ():
    # A 4x8 array stores 8-channel rows but reads 4-lane rows: dense0's output is read back
    # and written again in the layout dense1 reads (into x's rows, free by then).
    device = DeviceGeometry(preset("tiny").replace(rows=4, cols=8))
    program = compile_graph(mlp(np.random.default_rng(0), (10, 12, 5)), device, batch=2)
    moves = [(step.kind, step.args["tensor"], step.args["block"], step.args["base_row"])
             for step in program.steps if step.kind in ("read", "write")]
    assert moves == [("write", "x", 4, 0), ("read", "dense0", 8, 6), ("write", "dense0", 4, 0),
                     ("read", "dense1", 8, 10)]


def test_weights_are_resident_and_only_inputs_and_outputs_cross_the_link():
    program = compile_graph(mlp(np.random.default_rng(0)), TINY, batch=3)
    assert {step.kind for step in program.steps} == {"write", "commands", "read"}
    half = TINY.core.scratchpad_rows // 2
    weight_images = [step for step in program.resident if step.args["window"] == "scratchpad"]
    # 10x7: 3 k-blocks x 2 column blocks of 4 rows; 7x5: 2 x 2 -- both in the upper bank.
    assert [step.args["word"] for step in weight_images] == [half, half + 24]
    assert [p.where for p in program.placements] == ["device", "device"]


def test_weights_that_do_not_fit_are_streamed_in_groups():
    # 40x20 needs 200 weight rows (the bank has 128): streamed, 3 + 2 column blocks.
    builder = GraphBuilder()
    x = builder.input("x", (40,), scale=0.1)
    y = builder.node("wide", _dense(np.random.default_rng(1), 40, 20), [x], scale=0.1)
    program = compile_graph(builder.build([y]), TINY, batch=1)
    assert program.resident == ()
    images = [step for step in program.steps if step.kind == "image"]
    assert [step.data.size for step in images] == [120, 48, 80, 32]   # weights, params x2
    assert "streamed every round in 2 group(s)" in program.placements[0].reason


def test_host_nodes_and_reshapes_say_why():
    rng = np.random.default_rng(2)
    builder = GraphBuilder()
    x = builder.input("x", (4,), scale=0.1)
    d0 = builder.node("d0", _dense(rng, 4, 4, 0, 1), [x], scale=0.2)
    d1 = builder.node("d1", _dense(rng, 4, 4, 1, -1), [d0], scale=0.3)
    total = builder.node("add", Add(input1_scale=0.2, input1_zero_point=1, input2_scale=0.3,
                                    input2_zero_point=-1, output_scale=0.25,
                                    output_zero_point=0), [d0, d1])
    soft = builder.node("softmax", Softmax(input_scale=0.25, input_zero_point=0), [total])
    program = compile_graph(builder.build([soft]), TINY)
    where = {p.node: (p.where, p.reason) for p in program.placements}
    assert where["add"] == ("host", "no hardware op for element-wise addition")
    assert where["softmax"][0] == "host" and where["d1"][0] == "device"
    # Flatten moves no data when the rows hold whole channel blocks, else the host reshapes.
    assert [(p.where, p.reason) for p in compile_graph(cnn(rng, 4), TINY).placements
            if p.op == "Flatten"] == [("device", "no data moves: each row holds whole blocks "
                                                 "of 4 channels")]
    (flatten,) = [p for p in compile_graph(cnn(rng, 5), TINY).placements if p.op == "Flatten"]
    assert flatten.where == "host" and "moves data" in flatten.reason
    table = program.table()
    assert "add" in table and "host: no hardware op for element-wise addition" in table


def test_fold_columns_turns_a_conv_into_a_kh_by_1_conv():
    # Independent identity: a 3x3 conv (padding 1 left, 2 right) of x equals the 3x1 conv of
    # the folded input with the weights reshaped, the horizontal padding written by the fold.
    rng = np.random.default_rng(13)
    x = rng.integers(-128, 128, (2, 5, 6, 3)).astype(np.int8)
    w = rng.integers(-128, 128, (3, 3, 3, 4)).astype(np.int8)
    bias = rng.integers(-100, 100, 4).astype(np.int32)
    folded = fold_columns(x, kw=3, pad_left=1, pad_right=2, zero_point=-7)
    assert folded.shape == (2, 5, 7, 9) == (2, *column_fold_shape((5, 6, 3), 3, 1, 2))
    for image in range(2):
        np.testing.assert_array_equal(
            reference.conv2d(folded[image], w.reshape(3, 1, 9, 4), bias, 1, (1, 1, 0, 0), -7),
            reference.conv2d(x[image], w, bias, 1, (1, 1, 1, 2), -7))
        # Tap j of output column wo is input column wo + j - 1 (column -1 is padding).
        np.testing.assert_array_equal(folded[image, :, 0, :3], np.full((5, 3), -7))
        np.testing.assert_array_equal(folded[image, :, 3, 6:], x[image, :, 4])


@settings(max_examples=80, deadline=None)
@given(out_h=st.integers(1, 24), out_w=st.integers(1, 12), cin=st.integers(1, 40),
       cout=st.integers(1, 40), kernel=st.sampled_from([(1, 1), (3, 3), (1, 3)]),
       pool=st.booleans(), array=st.sampled_from([(4, 4), (3, 5), (16, 16)]),
       accumulator_rows=st.sampled_from([64, 256, 2048]), requant_lanes=st.integers(1, 4))
def test_scheduled_tiles_cover_every_output_once_within_a_half(
        out_h, out_w, cin, cout, kernel, pool, array, accumulator_rows, requant_lanes):
    assume(not pool or min(out_h, out_w) >= 2)
    kh, kw = kernel
    rows, cols = array
    half_rows = accumulator_rows // 2
    layer = ConvLayer(in_h=out_h + kh - 1, in_w=out_w + kw - 1, cin=cin, cout=cout, kh=kh,
                      kw=kw, pool=pool)
    sizes = dict(rows=rows, cols=cols, accumulator_rows=accumulator_rows,
                 requant_lanes=requant_lanes)
    most_rows = half_rows // out_w - (half_rows // out_w) % 2 * pool
    if most_rows == 0:
        with pytest.raises(ValueError, match=f"an output row of {out_w} pixels does not fit"):
            schedule_tiles(layer, **sizes)
        return
    tiles = schedule_tiles(layer, **sizes)
    blocks = -(-cout // cols)
    needed = out_h - out_h % 2 if pool else out_h
    covered = []
    for first, count, block, block_count in tiles:
        assert 0 < count * out_w * block_count <= half_rows
        if block_count > 1:
            assert (first, count) == (0, out_h)
        elif (first, count) != (0, out_h):
            assert first + count <= needed and not (pool and (first % 2 or count % 2))
        covered += [(b, row) for b in range(block, block + block_count)
                    for row in range(first, min(first + count, needed))]
    # Each column block's rows once, in column-block order.
    assert covered == [(b, row) for b in range(blocks) for row in range(needed)]
    # The search includes `output_bands`' tiles, so it is never slower by its own model.
    model = dict(rows=rows, cols=cols, requant_lanes=requant_lanes)
    bands = output_bands(layer, cols=cols, accumulator_rows=accumulator_rows)
    assert (schedule_cycles([tile_cycles(layer, tile, **model) for tile in tiles])
            <= schedule_cycles([tile_cycles(layer, tile, **model) for tile in bands]))


def test_schedule_cycles_overlap_each_store_with_the_next_compute():
    # Computes 10, 3, 4 and stores 5, 8, 1: the first compute alone (10), then the second
    # compute beside the first store (max(3, 5) = 5), the third beside the second (max(4, 8) =
    # 8), the last store alone (1).
    assert schedule_cycles([(10, 5), (3, 8), (4, 1)]) == 10 + 5 + 8 + 1
    assert schedule_cycles([]) == 0


def test_a_gemm_whose_array_rows_outweigh_its_stores_takes_several_blocks_per_tile():
    # 128 x 256 x 256 on a 16x16 array with 1024-row halves: 16 chunks of array rows per
    # column block against one store row per 4 cycles; the last tiles shrink to one block.
    layer = ConvLayer(in_h=128, in_w=1, cin=256, cout=256)
    tiles = schedule_tiles(layer, rows=16, cols=16, accumulator_rows=2048, requant_lanes=4)
    assert tiles[0][3] > 1 and len(tiles) < 16 and tiles[-1][3] == 1


def test_a_first_conv_with_few_channels_is_folded_on_the_host():
    # cnn's conv reads the graph input (1 channel): on a 4-row array its 3 taps of a row fit
    # one block, so the host writes 3-channel pixels and the device runs a 3x1 conv.
    program = compile_graph(cnn(np.random.default_rng(14)), TINY, batch=1)
    (write,) = [step for step in program.steps if step.kind == "write"]
    assert (write.args["layout"], write.args["fold"]) == ("int8_columns", (3, 1, 1, -3))
    convs = [fields for step in program.steps if step.kind == "commands"
             for opcode, fields in map(decode, step.data) if opcode == Opcode.CONV]
    assert [(c["kh"], c["kw"], c["cin_last"], c["pad_left"]) for c in convs] == [(3, 1, 3, 0)]
    assert "3 horizontal taps folded" in program.placements[0].reason


def test_a_node_that_cannot_fit_is_named_with_need_and_have():
    rng = np.random.default_rng(3)
    builder = GraphBuilder()
    x = builder.input("x", (600,), scale=0.1)
    y = builder.node("big", _dense(rng, 600, 1), [x], scale=0.1)
    with pytest.raises(DoesNotFit, match="node 'big' \\(Dense\\) does not fit the device: one "
                                         "block of 4 output channels needs 600 weight rows, but "
                                         "the scratchpad's weight bank holds 128 rows"):
        compile_graph(builder.build([y]), TINY)
    builder = GraphBuilder()
    x = builder.input("x", (16, 16, 1), scale=0.1)
    y = builder.node("conv", Conv2D(weights=rng.integers(-128, 128, (1, 1, 1, 1)),
                                    **_requant(rng, 1)), [x], scale=0.1)
    with pytest.raises(DoesNotFit, match="node 'conv' does not fit the device: .* tensor 'x' "
                                         "needs 256 scratchpad rows.* has 128 rows"):
        compile_graph(builder.build([y]), TINY)


def test_binary_hidden_layers_hand_over_on_chip():
    program = compile_graph(mixed(np.random.default_rng(12)), TINY, batch=3)
    # Only the host Sign's output is written (for hidden0); between the hidden layers and into
    # the output layer there are commands only: nothing read, written or run on the host.
    steps = [(step.kind, step.node) for step in program.steps]
    first = steps.index(("commands", "hidden0"))
    assert steps[first - 1] == ("write", "hidden0")
    assert steps[first:first + 4] == [("commands", "hidden0"), ("commands", "hidden1"),
                                      ("commands", "hidden2"), ("commands", "out")]
    link = program.link_bytes()
    command_bytes = 5 * 4
    assert link["hidden1"] == link["hidden2"] == [command_bytes, 0]
    assert link["hidden0"] == [3 * 2 * 4 + command_bytes, 0]       # 40 bits: 2 rows a sample
    # Each hidden layer writes its bits where the next one reads them, one row per 32 bits.
    commands = [_binary_commands(program, node) for node in (*HIDDEN, "out")]
    assert all(len(node_commands) == 1 for node_commands in commands[:3])
    for (writer,), (reader, *_) in zip(commands, commands[1:]):
        assert (writer["to_scratchpad"], writer["to_results"]) == (1, 0)
        assert reader["a_base"] == writer["out_base"]
    assert [command["out_stride"] for (command,) in commands[:3]] == [2, 3, 2]
    assert (commands[3][0]["to_results"], commands[3][0]["to_scratchpad"]) == (1, 0)
    # Every binary layer's weights resident, side by side: (beats x folds) rows of each.
    rows = [2 * 10, 2 * 18, 3 * 9, 2 * 2]
    assert [command["w_base"] for command, *_ in commands] == [0, 20, 56, 83]
    assert [command["t_base"] for (command,) in commands[:3]] == [0, 10, 28]
    stride = TINY.core.lanes_stride * TINY.core.weight_word_stride
    weights = [step for step in program.resident if step.args["window"] == "binary_weights"]
    assert [(step.args["word"], step.data.size) for step in weights] == [
        (stride * sum(rows[:index]), stride * size) for index, size in enumerate(rows)]
    assert not any(step.kind == "image" for step in program.steps)


def test_a_run_of_commands_ends_without_a_fence_but_layers_keep_theirs():
    """The driver waits for ``completed == pushed`` before the step after a run of commands,
    so the run needs no FENCE of its own (a command frame saved); the FENCE between the conv's
    stores and the dense GEMM that reads them (the ISA orders scratchpad rows only by FENCE)
    stays."""
    program = compile_graph(cnn(np.random.default_rng(3)), TINY, batch=2)
    kinds = [step.kind for step in program.steps]
    assert kinds == ["write", "commands", "commands", "commands", "commands", "read"]
    opcodes = [[decode(words)[0] for words in step.data] for step in program.steps[1:5]]
    assert opcodes == [[Opcode.CONV, Opcode.REQUANT_STORE], [Opcode.CONV, Opcode.REQUANT_STORE],
                       [Opcode.FENCE], [Opcode.GEMM, Opcode.REQUANT_STORE]]
    assert program.steps[4].bytes_in == 2 * 5 * 4


def test_program_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    program = compile_graph(_binary_graph(rng), TINY, batch=2)
    program.save(tmp_path / "net.npz")
    again = Program.load(tmp_path / "net.npz")
    assert again.table() == program.table()
    assert (again.device, again.batch, again.inputs, again.outputs) == (
        program.device, program.batch, program.inputs, program.outputs)
    for mine, theirs in zip((*program.resident, *program.steps),
                            (*again.resident, *again.steps), strict=True):
        assert (mine.kind, mine.node, mine.bytes_in, mine.bytes_out) == (
            theirs.kind, theirs.node, theirs.bytes_in, theirs.bytes_out)
        if mine.kind == "host":
            x = rng.integers(-128, 128, (2, 6)).astype(np.int8)
            np.testing.assert_array_equal(theirs.args["op"].run(x), mine.args["op"].run(x))
        else:
            assert theirs.args == {key: tuple(value) if isinstance(value, list) else value
                                   for key, value in mine.args.items()}
            np.testing.assert_array_equal(theirs.data, mine.data)
    (tmp_path / "bad.npz").write_bytes(b"not a program")
    with pytest.raises(ValueError, match="is not a saved ecpnn program"):
        Program.load(tmp_path / "bad.npz")


# On the device -----------------------------------------------------------------------------------

def _binary_graph(rng):
    """int8 -> Sign (host) -> BinaryDense (hidden) -> BinaryDense (int dots)."""
    builder = GraphBuilder()
    x = builder.input("x", (6,), scale=0.1)
    signs = builder.node("sign", Sign(thresholds=rng.integers(-20, 20, 6)), [x])
    hidden = builder.node("hidden", BinaryDense(
        weights=rng.choice([-1, 1], (5, 6)), thresholds=rng.integers(-3, 4, 5),
        ascending=rng.integers(0, 2, 5).astype(bool)), [signs])
    dots = builder.node("out", BinaryDense(weights=rng.choice([-1, 1], (3, 5))), [hidden])
    return builder.build([dots])


def test_cnn_from_a_saved_program_in_rounds(device, tmp_path):
    rng = np.random.default_rng(5)
    graph = cnn(rng)
    device.compile(graph, batch=2).save(tmp_path / "cnn.npz")
    network = device.load(Program.load(tmp_path / "cnn.npz"))
    x = rng.integers(-128, 128, (3, 4, 4, 1)).astype(np.int8)     # rounds of 2 and 1
    device.clear_perf_counters()
    np.testing.assert_array_equal(network(x), run_reference(graph, x))
    # The short round skips the missing image's CONV (3 x 16 pixels x 9 taps x 4 channels);
    # the GEMM runs on both rows of each round (2 x 2 rows x 16 x 3).
    assert device.perf_counters()["macs"] == 3 * 16 * 9 * 4 + 2 * 2 * 16 * 3


def count_link_bytes(device, monkeypatch, *, commands=False):
    """{"in", "out"}: the payload bytes the device's bulk writes and reads move from now on
    (and, with `commands`, the command words pushed), counted around the driver's own calls."""
    moved = {"in": 0, "out": 0}
    write, read, push = device.bulk_write, device.bulk_read, device._push

    def counting_write(address, data):
        moved["in"] += len(data)
        write(address, data)

    def counting_read(address, length):
        moved["out"] += length
        return read(address, length)

    def counting_push(words):
        moved["in"] += 4 * sum(len(command) for command in words)
        push(words)
    monkeypatch.setattr(device, "bulk_write", counting_write)
    monkeypatch.setattr(device, "bulk_read", counting_read)
    if commands:
        monkeypatch.setattr(device, "_push", counting_push)
    return moved


def test_mlp_sends_only_inputs_and_reads_only_outputs(device, monkeypatch):
    rng = np.random.default_rng(6)
    graph = mlp(rng)
    network = device.load(graph, batch=3)
    moved = count_link_bytes(device, monkeypatch)
    x = rng.integers(-128, 128, (3, 10)).astype(np.int8)
    np.testing.assert_array_equal(network(x), run_reference(graph, x))
    # 3 samples x 3 rows of 4 lanes in (one word per row), 3 x 2 rows of the 5 outputs back.
    assert moved == {"in": 3 * 3 * 4, "out": 3 * 2 * 4}


def test_profile_reads_each_nodes_counters(device, monkeypatch):
    rng = np.random.default_rng(12)
    graph = cnn(rng)
    network = device.load(graph, batch=2)
    moved = count_link_bytes(device, monkeypatch, commands=True)
    x = rng.integers(-128, 128, (2, 4, 4, 1)).astype(np.int8)
    outputs, rows = network.profile(x)
    monkeypatch.undo()
    np.testing.assert_array_equal(outputs, run_reference(graph, x))
    by_node = {row["node"]: row for row in rows}
    assert list(by_node) == ["conv", "flatten", "dense"]
    # Independent math, 2 samples: the 3x3 conv with padding 1 keeps 4x4 pixels, each 9 taps x
    # 1 input channel x 4 outputs; the dense reads the pooled 2x2x4 = 16 values for 3 outputs.
    assert by_node["conv"]["macs"] == 2 * 4 * 4 * 9 * 1 * 4
    assert by_node["dense"]["macs"] == 2 * 16 * 3
    for name in ("conv", "dense"):
        row = by_node[name]
        assert row["where"] == "device" and row["cycles"] > 0
        # The 4x4 array does at most 16 MACs a cycle.
        assert row["cycles"] >= row["macs"] / 16
        assert row["utilization"] == pytest.approx(row["macs"] / (16 * row["cycles"]))
    assert (by_node["flatten"]["cycles"], by_node["flatten"]["utilization"]) == (0, None)
    # Every byte the driver moved is attributed to one node: x (2 x 16 rows of one word) and
    # the commands to the conv, the dense's output (2 rows of one word) back from the dense.
    assert sum(row["bytes_in"] for row in rows) == moved["in"]
    assert sum(row["bytes_out"] for row in rows) == moved["out"] == by_node["dense"]["bytes_out"]
    assert by_node["dense"]["bytes_out"] == 2 * 4
    # The same MACs as a plain call, read once for the whole run.
    device.clear_perf_counters()
    np.testing.assert_array_equal(network(x), outputs)
    assert device.perf_counters()["macs"] == sum(row["macs"] for row in rows)


def test_dag_with_host_nodes(device):
    rng = np.random.default_rng(7)
    builder = GraphBuilder()
    x = builder.input("x", (4,), scale=0.1)
    d0 = builder.node("d0", _dense(rng, 4, 4, 0, 1), [x], scale=0.2)
    d1 = builder.node("d1", _dense(rng, 4, 4, 1, -1), [d0], scale=0.3)
    total = builder.node("add", Add(input1_scale=0.2, input1_zero_point=1, input2_scale=0.3,
                                    input2_zero_point=-1, output_scale=0.25,
                                    output_zero_point=0), [d0, d1])
    d2 = builder.node("d2", _dense(rng, 4, 3, 0, 0), [total], scale=0.5)
    soft = builder.node("softmax", Softmax(input_scale=0.5, input_zero_point=0), [d2])
    graph = builder.build([soft, d1])
    x = rng.integers(-128, 128, (2, 4)).astype(np.int8)
    for got, expected in zip(device.load(graph)(x), run_reference(graph, x), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_binary_network_with_a_host_sign(device):
    rng = np.random.default_rng(8)
    graph = _binary_graph(rng)
    x = rng.integers(-128, 128, (3, 6)).astype(np.int8)
    network = device.load(graph)
    assert [p.where for p in network.program.placements] == ["host", "device", "device"]
    np.testing.assert_array_equal(network(x), run_reference(graph, x))


@pytest.mark.parametrize("last", ["dots", "int8"])
def test_mixed_network_keeps_its_binary_layers_on_chip(device, monkeypatch, last):
    rng = np.random.default_rng(13)
    graph = mixed(rng, last)
    network = device.load(graph, batch=3)
    where = {p.node: p.where for p in network.program.placements}
    assert [where[node] for node in ("first", "sign", *HIDDEN, "out")] == [
        "device", "host", "device", "device", "device", "device"]
    moved = count_link_bytes(device, monkeypatch)
    x = rng.integers(-128, 128, (5, 10)).astype(np.int8)       # rounds of 3 and 2 samples
    np.testing.assert_array_equal(network(x), run_reference(graph, x))
    if last == "dots":
        # Per sample: x (3 rows of 4 lanes) and the Sign's 40 bits (2 rows) in; the first
        # layer's 40 int8 (10 rows) and 2 result rows of 8 words (5 dots) out. Nothing else.
        assert moved == {"in": 5 * (3 + 2) * 4, "out": 5 * (10 * 4 + 2 * 8 * 4)}


@settings(max_examples=4, deadline=None)
@given(st.lists(st.integers(1, 70), min_size=2, max_size=4), st.integers(1, 6), st.integers(1, 4),
       st.integers(0, 2**32 - 1))
@example([1, 1], 1, 1, 0)               # one bit in, one neuron: partial beats everywhere
@example([64, 32, 33], 3, 2, 1)         # whole 32-bit beats, then one bit over
def test_binary_chains_of_random_shapes(device, sizes, outputs, samples, seed):
    """Sign (host) -> hidden binary layers of random widths on chip -> integer dots."""
    rng = np.random.default_rng(seed)
    builder = GraphBuilder()
    tensor = builder.node("sign", Sign(thresholds=rng.integers(-20, 20, sizes[0])),
                          [builder.input("x", (sizes[0],), scale=0.1)])
    for index, (k, n) in enumerate(zip(sizes, sizes[1:])):
        tensor = builder.node(f"hidden{index}", BinaryDense(
            weights=rng.choice([-1, 1], (n, k)), thresholds=rng.integers(-k - 1, k + 2, n),
            ascending=rng.integers(0, 2, n).astype(bool)), [tensor])
    out = builder.node("out", BinaryDense(weights=rng.choice([-1, 1], (outputs, sizes[-1]))),
                       [tensor])
    graph = builder.build([out])
    network = device.load(graph, batch=samples)
    assert not [step for step in network.program.steps
                if step.node.startswith("hidden") and step.kind not in ("write", "commands")]
    x = rng.integers(-128, 128, (samples, sizes[0])).astype(np.int8)
    np.testing.assert_array_equal(network(x), run_reference(graph, x))


def test_device_mismatch_before_anything_is_written(device):
    other = DeviceGeometry(device.config.replace(scratchpad_rows=512))
    program = compile_graph(mlp(np.random.default_rng(9)), other)
    frames = device.link_status()["FRAMES_OK"]
    with pytest.raises(DeviceMismatch, match="scratchpad_rows: 512 != 256"):
        device.load(program)
    assert device.link_status()["FRAMES_OK"] == frames + 1     # only the status read above


def test_a_failed_load_leaves_the_device_usable(device, monkeypatch):
    rng = np.random.default_rng(10)
    graph = mlp(rng)
    first = device.load(graph)
    write = device._write_words
    calls = []

    def failing(window, word, values):
        calls.append(window)
        if len(calls) == 2:
            raise LinkError("line dropped (injected)")
        write(window, word, values)
    monkeypatch.setattr(device, "_write_words", failing)
    with pytest.raises(LinkError, match="injected"):
        device.load(mlp(np.random.default_rng(11)))
    monkeypatch.undo()
    x = rng.integers(-128, 128, (2, 10)).astype(np.int8)
    with pytest.raises(RuntimeError, match="load it again"):
        first(x)        # its weights may be half overwritten: refused, not wrong
    np.testing.assert_array_equal(device.load(graph)(x), run_reference(graph, x))


# Raw accumulators: DenseInt32 and Accelerator.matmul_int32 ---------------------------------------

def _accumulators_graph(rng, k, n, zero_point=0):
    builder = GraphBuilder()
    x = builder.input("x", (k,), scale=0.1, zero_point=zero_point)
    out = builder.node("acc", DenseInt32(weights=rng.integers(-128, 128, (k, n)),
                                         bias=rng.integers(-2**30, 2**30, n),
                                         input_zero_point=zero_point), [x])
    return builder.build([out])


def _expected_accumulators(graph, x):
    """``(x - zero_point) @ weights + bias`` in Python integers."""
    op = graph.nodes[0].op
    return [[sum((a - op.input_zero_point) * w for a, w in zip(row, column)) + bias
             for column, bias in zip(op.weights.T.tolist(), op.bias.tolist())]
            for row in x.tolist()]


def test_dense_int32_tiles_are_read_back_from_the_accumulator():
    # 10x9 on the tiny core (4x4, accumulator halves of 32 rows), 20 samples a round: each
    # column block's 20 rows fill most of a half, so three GEMM tiles alternate halves, each
    # followed by FENCE and a read of its half; no REQUANT_STORE, no parameters.
    graph = _accumulators_graph(np.random.default_rng(20), 10, 9, zero_point=-7)
    program = compile_graph(graph, TINY, batch=20)
    assert [step.kind for step in program.steps] == ["write"] + ["commands",
                                                                  "read_accumulators"] * 3
    assert [step.args["window"] for step in program.resident] == ["scratchpad"]
    reads = [step for step in program.steps if step.kind == "read_accumulators"]
    assert [(r.args["acc_base"], r.args["low"], r.args["high"]) for r in reads] == [
        (0, 0, 4), (32, 4, 8), (0, 8, 9)]
    gemms = [fields for step in program.steps if step.kind == "commands"
             for opcode, fields in map(decode, step.data) if opcode == Opcode.GEMM]
    assert [(g["acc_base"], g["m"], g["k_blocks"], g["k_last"], g["n_blocks"], g["n_last"])
            for g in gemms] == [(0, 20, 3, 2, 1, 4), (32, 20, 3, 2, 1, 4), (0, 20, 3, 2, 1, 1)]
    op = graph.nodes[0].op
    bias = op.bias.astype(np.int64) + 7 * op.weights.astype(np.int64).sum(0)  # zero point -7
    np.testing.assert_array_equal(np.concatenate([r.data for r in reads]), bias)
    assert program.placements[0].where == "device"
    assert "int32 accumulators read back" in program.placements[0].reason


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 40), st.integers(1, 30), st.integers(1, 20), st.booleans(),
       st.integers(0, 2**32 - 1))
@example(1, 1, 1, False, 0)             # size 1 everywhere
@example(40, 3, 9, False, 1)            # 40 rows: bands of rows taller than a half
@example(5, 30, 20, False, 2)           # 5 x 32 weight rows: streamed in two groups
@example(3, 13, 6, True, 3)             # every product -128 x -128
def test_matmul_int32_random_shapes(device, m, k, n, extreme, seed):
    rng = np.random.default_rng(seed)
    if extreme:
        a, w = np.full((m, k), -128, np.int8), np.full((k, n), -128, np.int8)
    else:
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    bias = rng.integers(-2**30, 2**30, n).astype(np.int32)
    np.testing.assert_array_equal(device.matmul_int32(a, w, bias), reference.gemm(a, w, bias))
    np.testing.assert_array_equal(device.matmul_int32(a, w), reference.gemm(a, w))


def test_a_short_round_reads_only_its_samples(device, monkeypatch):
    # 40 samples a round: two bands of rows (32 + 8) per column block. A call with 5 samples
    # writes 5 input rows, runs only the first band's GEMM of each block and reads 5 rows of
    # each of them.
    rng = np.random.default_rng(21)
    graph = _accumulators_graph(rng, 3, 6, zero_point=4)
    network = device.load(graph, batch=40)
    assert sum(step.kind == "read_accumulators" for step in network.program.steps) == 4
    moved = count_link_bytes(device, monkeypatch)
    x = rng.integers(-128, 128, (5, 3)).astype(np.int8)
    result = network(x)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, _expected_accumulators(graph, x))
    core = device.core
    assert moved == {"in": 5 * core.scratchpad_stride * 4,
                     "out": 2 * 5 * core.accumulator_stride * 4}


def test_dense_int32_program_file_round_trip(device, tmp_path):
    rng = np.random.default_rng(22)
    graph = _accumulators_graph(rng, 7, 5)
    program = device.compile(graph, batch=36)
    program.save(tmp_path / "acc.npz")
    again = Program.load(tmp_path / "acc.npz")
    for mine, theirs in zip(program.steps, again.steps, strict=True):
        assert (mine.kind, mine.node, mine.bytes_in, mine.bytes_out) == (
            theirs.kind, theirs.node, theirs.bytes_in, theirs.bytes_out)
        np.testing.assert_array_equal(theirs.data, mine.data)
        if mine.kind == "read_accumulators":
            assert theirs.args == mine.args
    x = rng.integers(-128, 128, (36, 7)).astype(np.int8)
    np.testing.assert_array_equal(device.load(again)(x), _expected_accumulators(graph, x))


@pytest.mark.parametrize("args, error, words", [
    ((np.ones((2, 3), np.int8), np.ones((4, 2), np.int8)), ValueError,
     "matmul_int32: a is [M, K] = [2, 3] but w is [K, N] = [4, 2]: K differs"),
    ((np.ones((2, 3), np.float32), np.ones((3, 2), np.int8)), TypeError,
     "a must be an integer array (int8), not dtype float32"),
    ((np.ones((2, 3), np.int8), np.full((3, 2), 128)), ValueError,
     "w must hold int8 values in [-128, 127], found [128, 128]"),
    ((np.ones((2, 3), np.int8), np.ones((3, 2), np.int8), np.zeros(3, np.int32)), ValueError,
     "bias must have shape (2,) (one per output channel), not (3,)"),
    ((np.ones((1, 600), np.int8), np.ones((600, 1), np.int8)), DoesNotFit,
     "node 'matmul_int32' (DenseInt32) does not fit the device: one block of 4 output channels "
     "needs 600 weight rows, but the scratchpad's weight bank holds 128 rows"),
    ((np.full((1, 2), -128, np.int8), np.full((2, 1), -128, np.int8), [2**31 - 2**15]),
     OverflowError, "tensor 'matmul_int32': a sum with the bias leaves int32: columns 0:1 hold "
                    "[2147483648, 2147483648]"),
])
def test_matmul_int32_bad_input(device, args, error, words):
    with pytest.raises(error) as info:
        device.matmul_int32(*args)
    assert words in str(info.value)
    a, w = np.array([[3, -1]], np.int8), np.array([[2], [5]], np.int8)
    np.testing.assert_array_equal(device.matmul_int32(a, w), [[1]])     # the device works on
