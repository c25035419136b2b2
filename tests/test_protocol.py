"""The link protocol definition: CRC, frame encoding, header layout, register map, config codec."""

import dataclasses
import struct

import pytest
from hypothesis import given, settings, strategies as st

from hw.config import AcceleratorConfig, DATAFLOWS, MULTIPLIERS, PRESETS
from hw.soc import protocol
from hw.soc.protocol import Opcode, Reply, Request, RequestHeader, Status

FAST = settings(max_examples=40, deadline=None)


def bitwise_crc16(data):
    """CRC-16/CCITT-FALSE straight from its definition, one bit at a time."""
    crc = 0xFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            feedback = ((crc >> 15) ^ (byte >> bit)) & 1
            crc = ((crc << 1) & 0xFFFF) ^ (0x1021 if feedback else 0)
    return crc


def test_crc_check_value():
    # The catalogued check value of CRC-16/CCITT-FALSE.
    assert protocol.crc16(b"123456789") == 0x29B1


@FAST
@given(st.binary(max_size=64))
def test_crc_matches_definition_and_leaves_zero_after_itself(data):
    assert protocol.crc16(data) == bitwise_crc16(data)
    assert protocol.crc16(data + struct.pack(">H", protocol.crc16(data))) == 0


requests = st.builds(
    lambda seq, opcode, address, words, data: Request(
        seq, opcode, address, 4 * words, data.draw(st.binary(min_size=4 * words,
                                                             max_size=4 * words))
        if opcode.writes else b""),
    st.integers(0, 255), st.sampled_from(list(Opcode)), st.integers(0, 2**32 - 1),
    st.integers(1, 64), st.data())


@FAST
@given(requests)
def test_request_round_trip(request):
    frame = request.encode()
    assert frame[:2] == bytes([0xA5, 0x5A])
    expected_size = 2 + 8 + 2 + (request.length + 2 if request.opcode.writes else 0)
    assert len(frame) == expected_size
    assert Request.decode(frame) == request


@FAST
@given(requests, st.data())
def test_any_flipped_bit_is_detected(request, data):
    frame = bytearray(request.encode())
    bit = data.draw(st.integers(16, 8 * len(frame) - 1))     # past the sync bytes
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ValueError):
        Request.decode(frame)


@FAST
@given(st.integers(0, 255), st.sampled_from(list(Status)), st.binary(max_size=64))
def test_reply_round_trip(seq, status, data):
    frame = Reply(seq, status, data).encode()
    assert frame[:2] == bytes([0x5A, 0xA5])
    assert struct.unpack_from("<BBH", frame, 2) == (seq, status.value, len(data))
    assert Reply.decode(frame) == Reply(seq, status, data)


def test_request_payload_must_match_length():
    with pytest.raises(ValueError, match="needs that many payload bytes"):
        Request(0, Opcode.BULK_WRITE, 0, 8, b"1234").encode()
    with pytest.raises(ValueError, match="carries no payload"):
        Request(0, Opcode.BULK_READ, 0, 4, b"1234").encode()


@FAST
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1),
       st.integers(0, 2**16 - 1))
def test_gateware_header_layout_is_the_wire_layout(seq, opcode, address, length):
    wire = struct.pack("<BBIH", seq, opcode, address, length)
    view = RequestHeader.const({"seq": seq, "opcode": opcode, "address": address,
                                "length": length})
    assert view.as_value().value == int.from_bytes(wire, "little")


def test_enums_are_bytes_with_distinct_values():
    for enum in (Opcode, Status):
        assert enum.as_shape().width == 8
        assert len({member.value for member in enum}) == len(enum)
    assert Status.OK.value == 0
    assert {op for op in Opcode if op.writes} == {Opcode.WRITE_REGISTERS, Opcode.BULK_WRITE}
    assert {op for op in Opcode if op.bulk} == {Opcode.BULK_READ, Opcode.BULK_WRITE}


def test_register_map():
    names = protocol.ID_REGISTERS + protocol.CONTROL_REGISTERS
    addresses = [protocol.register_address(name) for name in names]
    assert len(set(names)) == len(names) and len(set(addresses)) == len(addresses)
    assert all(address % 4 == 0 for address in addresses)
    assert protocol.register_address("MAGIC") == protocol.CSR_BASE
    assert max(protocol.register_address(name) for name in protocol.ID_REGISTERS) \
        < protocol.PERF_COUNTERS_BASE < protocol.CONTROL_BASE
    fields = [field.name for field in dataclasses.fields(AcceleratorConfig)]
    # One register per field, but a mixed array's dsp_pes shares CONFIG_MULTIPLIER.
    assert len(protocol.CONFIG_REGISTERS) == len(fields) - 1
    with pytest.raises(KeyError, match="Unknown register 'NOPE'"):
        protocol.register_address("NOPE")


def test_magic_spells_the_project():
    assert protocol.MAGIC.to_bytes(4, "little") == b"ECNN"


def _split(multiplier, split, rows, cols):
    """multiplier and dsp_pes for a drawn mapping (a 1-PE array cannot be mixed)."""
    if multiplier != "mixed":
        return {"multiplier": multiplier}
    if rows * cols < 2:
        return {"multiplier": "lut"}
    return {"multiplier": "mixed", "dsp_pes": 1 + split % (rows * cols - 1)}


configs = st.builds(
    lambda side_r, side_c, dataflow, multiplier, split, lanes, pad, acc, width, blanes, baud,
    mult:
    AcceleratorConfig(rows=side_r, cols=side_c, dataflow=dataflow,
                      **_split(multiplier, split, side_r, side_c),
                      requant_lanes=min(lanes, side_c), scratchpad_rows=1 << pad,
                      accumulator_rows=1 << acc, binary_width=width, binary_lanes=blanes,
                      uart_baud=baud, clock_mhz=baud * mult / 1e6),
    st.integers(1, 32), st.integers(1, 32), st.sampled_from(DATAFLOWS),
    st.sampled_from(MULTIPLIERS), st.integers(0, 1 << 20), st.integers(1, 32),
    st.integers(4, 20), st.integers(4, 20),
    st.sampled_from([1 << n for n in range(3, 13)]), st.integers(1, 256),
    st.sampled_from([1_000_000, 2_000_000, 3_000_000]), st.integers(10, 100))


@FAST
@given(configs)
def test_config_registers_round_trip(config):
    values = protocol.encode_config(config)
    assert set(values) == set(protocol.CONFIG_REGISTERS)
    assert values["CONFIG_ROWS"] == config.rows and values["CONFIG_COLS"] == config.cols
    assert values["CONFIG_DATAFLOW"] == DATAFLOWS.index(config.dataflow)
    assert values["CONFIG_CLOCK_HZ"] == round(config.clock_mhz * 1e6)
    assert values["CONFIG_UART_BAUD"] == config.uart_baud
    assert protocol.decode_config(values) == config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip(name):
    assert protocol.decode_config(protocol.encode_config(PRESETS[name])) == PRESETS[name]


def test_multiplier_register_of_uniform_arrays_is_unchanged_by_the_split_field():
    """CONFIG_MULTIPLIER of an all-DSP / all-LUT array is the mapping's index alone, as before
    mixed arrays existed; a mixed one carries dsp_pes from bit 8."""
    tiny = PRESETS["tiny"]
    assert protocol.encode_config(tiny)["CONFIG_MULTIPLIER"] == 0
    assert protocol.encode_config(tiny.replace(multiplier="lut"))["CONFIG_MULTIPLIER"] == 1
    mixed = tiny.replace(multiplier="mixed", dsp_pes=5)
    assert protocol.encode_config(mixed)["CONFIG_MULTIPLIER"] == 2 | 5 << 8


def test_bad_config_registers_are_reported():
    values = protocol.encode_config(PRESETS["tiny"])
    with pytest.raises(ValueError, match="CONFIG_DATAFLOW holds 7"):
        protocol.decode_config({**values, "CONFIG_DATAFLOW": 7})
    with pytest.raises(ValueError, match="rows"):
        protocol.decode_config({**values, "CONFIG_ROWS": 0})
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        protocol.encode_config({"rows": 4})
