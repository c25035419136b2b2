"""A stallable read of a fixed-latency RAM port that another client may steal, as a stream.

`ReadStage` turns a stream of read requests (``addr``, ``read``, ``tag``) into a stream of
responses (``data``, ``tag``). A request with ``read=0`` passes its tag without reading (e.g. a
padding row). The memory port returns ``port_data`` `port_latency` cycles after ``port_en`` (1 for
a bare block-RAM port, 3 for the core's registered scratchpad and accumulator ports) and is
shared: while ``blocked`` is high (the host link reads the same port, it has fixed latency and
always wins) no request is accepted. Responses land in a small FIFO; a request is only accepted
while a FIFO entry is promised to it, so back-pressure on ``response`` never loses a read. The
free entries are a registered credit count (`hw.credit`), so ``request.ready`` is ``~blocked``
and one flip-flop, and ``port_en`` one LUT of the request's ``valid``/``read`` and those two.
``port_request`` is ``port_en`` before ``blocked``: the read this stage makes unless it is
blocked, for an arbiter that must not wait for its own ``blocked`` answer (timing).
A response that leaves is registered before it returns its credit, so the consumer's ``ready``
(often the end of a long handshake chain) reaches only the FIFO::

    cycle     t                         t+L (L = port_latency)
    request   accept, port addr/en     -
    port      -                         data -> FIFO (with the tag delayed L cycles)
    credits   -                         (one fewer from t+1; one more from the second cycle
                                        after a response leaves)

Latency: a response is valid ``port_latency + 2`` cycles after its request is accepted (the port,
then 2 through `SyncFIFOBuffered`). Throughput: one request per cycle while not blocked and
``response`` is ready with the default `depth` of ``port_latency + 4`` (an entry is promised from
its accept until the second cycle after its response leaves).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.credit import credit_counter
from hw.pipeline import delayed

__all__ = ["ReadStage"]


class ReadStage(wiring.Component):
    """Parameters (keyword-only): addr_width, data_shape, tag_shape (any layout), port_latency
    (>= 1), depth (>= 3, default ``port_latency + 4``).

    ``idle`` (registered) is high when no read is in flight and the FIFO is empty, from the
    second cycle after the last response left.
    """

    def __init__(self, *, addr_width, data_shape, tag_shape, port_latency, depth=None):
        if not isinstance(port_latency, int) or isinstance(port_latency, bool) or port_latency < 1:
            raise ValueError(f"ReadStage port_latency must be an integer >= 1, "
                             f"not {port_latency!r}")
        if depth is None:
            depth = port_latency + 4
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 3:
            raise ValueError(f"ReadStage depth must be an integer >= 3, not {depth!r}")
        self.port_latency = port_latency
        self.depth = depth
        self.response_layout = data.StructLayout({"data": data_shape, "tag": tag_shape})
        super().__init__({
            "request": In(stream.Signature(data.StructLayout({
                "addr": addr_width, "read": 1, "tag": tag_shape}))),
            "response": Out(stream.Signature(self.response_layout)),
            "port_addr": Out(addr_width),
            "port_en": Out(1),
            "port_request": Out(1),
            "port_data": In(data_shape),
            "blocked": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.response_layout.size,
                                                    depth=self.depth)
        accept = Signal()
        returned = Signal()
        m.d.sync += returned.eq(self.response.valid & self.response.ready)
        has_credit, all_free = credit_counter(m, slots=self.depth, take=accept, give=returned,
                                              name="fifo")
        m.d.comb += [
            self.request.ready.eq(~self.blocked & has_credit),
            accept.eq(self.request.valid & self.request.ready),
            self.port_addr.eq(self.request.payload.addr),
            self.port_request.eq(self.request.valid & self.request.payload.read & has_credit),
            self.port_en.eq(self.port_request & ~self.blocked),
        ]
        # The tag is data a valid flag qualifies: its registers need no reset.
        arrived = delayed(m, accept, self.port_latency, name="in_flight")
        tag = delayed(m, self.request.payload.tag, self.port_latency, name="tag", reset_less=True)
        response = Signal(self.response_layout)
        m.d.comb += [
            response.data.eq(self.port_data),
            response.tag.eq(tag),
            fifo.w_data.eq(response),
            fifo.w_en.eq(arrived),
            self.response.payload.eq(fifo.r_data),
            self.response.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.response.ready),
            self.idle.eq(all_free),
        ]
        return m
