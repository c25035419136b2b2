"""A stallable read of a synchronous RAM port that another client may steal, as a stream.

`ReadStage` turns a stream of read requests (``addr``, ``read``, ``tag``) into a stream of
responses (``data``, ``tag``). A request with ``read=0`` passes its tag without reading (e.g. a
padding row). The memory port has one cycle of read latency and is shared: while ``blocked`` is
high (the host link reads the same port, it has fixed latency and always wins) no request is
accepted. Responses land in a small FIFO; a request is only accepted while a FIFO entry is
promised to it, so back-pressure on ``response`` never loses a read. The free entries are a
registered credit count (`hw.credit`), so ``request.ready`` is ``~blocked`` and one flip-flop,
and ``port_en`` one LUT of the request's ``valid``/``read`` and those two::

    cycle     t                         t+1
    request   accept, port addr/en     -
    port      -                         data -> FIFO (with the tag registered at t)
    credits   -                         one fewer (one more the cycle after a response leaves)

Latency: a response is valid 3 cycles after its request is accepted (1 read + 2 through
`SyncFIFOBuffered`). Throughput: one request per cycle while not blocked and ``response`` is ready
with the default `depth` of 4 (an entry is promised from its accept until the cycle after its
response leaves: 4 cycles).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.credit import credit_counter

__all__ = ["ReadStage"]


class ReadStage(wiring.Component):
    """Parameters (keyword-only): addr_width, data_shape, tag_shape (any layout), depth (>= 3).

    ``idle`` (registered) is high when no read is in flight and the FIFO is empty.
    """

    def __init__(self, *, addr_width, data_shape, tag_shape, depth=4):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 3:
            raise ValueError(f"ReadStage depth must be an integer >= 3, not {depth!r}")
        self.depth = depth
        self.response_layout = data.StructLayout({"data": data_shape, "tag": tag_shape})
        super().__init__({
            "request": In(stream.Signature(data.StructLayout({
                "addr": addr_width, "read": 1, "tag": tag_shape}))),
            "response": Out(stream.Signature(self.response_layout)),
            "port_addr": Out(addr_width),
            "port_en": Out(1),
            "port_data": In(data_shape),
            "blocked": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.response_layout.size,
                                                    depth=self.depth)
        in_flight = Signal()
        tag = Signal.like(self.request.payload.tag)
        accept = Signal()
        has_credit, all_free = credit_counter(
            m, slots=self.depth, take=accept, give=self.response.valid & self.response.ready,
            name="fifo")
        m.d.comb += [
            self.request.ready.eq(~self.blocked & has_credit),
            accept.eq(self.request.valid & self.request.ready),
            self.port_addr.eq(self.request.payload.addr),
            self.port_en.eq(accept & self.request.payload.read),
        ]
        m.d.sync += [in_flight.eq(accept), tag.eq(self.request.payload.tag)]
        response = Signal(self.response_layout)
        m.d.comb += [
            response.data.eq(self.port_data),
            response.tag.eq(tag),
            fifo.w_data.eq(response),
            fifo.w_en.eq(in_flight),
            self.response.payload.eq(fifo.r_data),
            self.response.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.response.ready),
            self.idle.eq(all_free),
        ]
        return m
