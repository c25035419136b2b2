"""XNOR-popcount engine for binary (W1A1) dense layers, with threshold activations.

Computes, for each input vector ``a`` (K values +1/-1) and each neuron ``n`` of a layer::

    dot[n] = K - 2 * popcount(a XOR w[n])             (bit 1 = +1, bit 0 = -1)
    bit[n] = dot[n] >= t[n] if ascending[n] else dot[n] <= t[n]

like a FINN matrix-vector unit: `width` bits per lane per cycle (SIMD) and `lanes` neurons in
parallel (PE). A K-bit vector is consumed in ``F = ceil(K / width)`` beats (input folding) and a
layer of N neurons is computed in ``NF = ceil(N / lanes)`` neuron folds; a vector therefore
occupies the engine for ``F * NF`` cycles. The first neuron fold takes the vector from the
`activations` stream and keeps a copy in an activation buffer; the other ``NF - 1`` folds replay
it from there, so the stream sees back-pressure during those folds. The last beat of a vector is
masked to ``K mod width`` bits: padding bits never count, whatever their value.

Packing (the same as `sim.reference.pack_bits`): value k of a vector is bit k of the
little-endian integer of its packed bytes (bit k % 8 of byte k // 8). Beat j carries bits
``[j * width, (j + 1) * width)`` of that integer, so value k is bit ``k % width`` of beat
``k // width``. Weights use the same order: neuron ``nf * lanes + lane`` of a layer placed at
weight base ``b`` has its beat j stored at weight address ``b + nf * F + j`` in lane `lane`, and
its threshold at threshold row ``t + nf`` (threshold base ``t``). Several layers stay resident
side by side: the threshold memory is as deep as the weight memory (`weight_depth`), since a
layer uses at least one weight row per neuron fold, so the thresholds of layers whose weights
fit always fit too.

Protocol:

1. Write weights (`weights` stream, one lane of one beat per transfer) and thresholds
   (`thresholds` stream, one lane of one threshold row per transfer; clamp them with
   `clamp_thresholds` first). Both are always ready and take effect on the next cycle; do not
   overwrite a neuron fold that vectors in flight still use.
2. Send a `layer` descriptor (``k`` in 1..max_k, ``neuron_folds`` in 1..ceil(max_n/lanes), the
   layer's ``weight_base`` and ``threshold_base``; its ``F * neuron_folds`` weight rows and
   ``neuron_folds`` threshold rows must lie inside the memories). It is taken into a holding
   register (ready while that is empty) and applied once the engine is between vectors (no
   vector partly consumed, every result delivered), so send it after the previous layer's last
   vector; it applies to every vector that follows, and `idle` stays low until it has applied.
   After reset the engine takes no activations until it has a descriptor.
3. Stream vectors on `activations` (``last`` set on beat F-1 of each vector; a mismatch sets the
   sticky `framing_error`). Results come out on `results`, one transfer per neuron fold:
   ``dots[lane]`` (int32) and bit ``lane`` of ``bits`` (threshold output, 1 = +1) for neuron
   ``nf * lanes + lane``, with ``last`` on the final neuron fold of each vector. Both are valid on
   every transfer; a hidden layer uses ``bits``, the last layer ``dots``. Lanes beyond N in the
   last neuron fold carry whatever that weight row holds and are to be ignored.

Pipeline (``P`` = `popcount_latency` (width) tree stages, 3 for 64 bits; one beat issued per
cycle)::

    cycle   0         1            2             2+P      3+P          4+P         5+P      7+P
          issue ->  activation -> (a^w)&mask -> count -> accumulate -> dot,     -> FIFO  -> FIFO
          beat,     word         into the tree  (tree)   over beats    threshold  write    output
          weight    (buffer),                                          compare    register
          read      weight row

The activation word gets its own register (stage 1), selected there from the stream word or the
buffer, so that multiplexer is paid once per bit, not once per bit and lane. The weight row is
read in the issue cycle and registered in the fabric as it leaves the block RAMs (stage 1): an
ECP5 block RAM's read data arrives late in the cycle, so nothing else is computed from it. The
mismatch bits ``(a ^ w) & mask`` are computed from those registers straight into the tree's
leaf counts (two LUT levels), with no register of their own.

Latency: a neuron fold's result is on `results` ``P + 7`` cycles after its last beat was
accepted (or replayed). A descriptor taken in cycle t applies at t + 1 when the engine is
between vectors, and beats are accepted from t + 2. Throughput: one beat per cycle, so
``2 * width * lanes`` binary ops per cycle, with no bubble at beat, neuron-fold or vector
boundaries while `results` is ready. The output FIFO is deep enough for every result in flight;
the issue stage only starts a result when a FIFO slot is reserved for it, so the pipeline itself
never stalls. The free slots are a
registered credit count (`hw.credit`), so the issue decision starts from flip-flops.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.credit import credit_counter
from hw.pipeline import delayed
from hw.synthesis import MAPPING_BOUNDARY, UNDEFINED_ON_COLLISION

from .popcount import PopcountTree, popcount_latency

__all__ = ["BinaryEngine", "clamp_thresholds", "dot_shape", "threshold_shape"]


def dot_shape(max_k):
    """The shape of a dot product of up to `max_k` bits (``-max_k .. max_k``)."""
    return signed(max_k.bit_length() + 1)


def threshold_shape(max_k):
    """The shape of a stored threshold (``-max_k-1 .. max_k+1``, see `clamp_thresholds`)."""
    return signed((max_k + 1).bit_length() + 1)


def clamp_thresholds(thresholds, k):
    """Thresholds limited to ``[-k-1, k+1]``, the range the engine stores.

    A dot product of length `k` lies in ``[-k, k]``, so clamping changes no comparison result in
    either direction (``dot >= k+1`` and ``dot <= -k-1`` never hold, ``dot >= -k-1`` and
    ``dot <= k+1`` always do). `sim.reference.fold_batchnorm_sign` returns int32 bounds that need
    this before they are written to the engine.
    """
    return [min(max(int(threshold), -k - 1), k + 1) for threshold in thresholds]


def _check_count(name, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"BinaryEngine {name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"BinaryEngine {name} must be in {allowed}, not {value}")


class BinaryEngine(wiring.Component):
    """XNOR-popcount matrix-vector unit with a per-channel threshold unit.

    Parameters
    ----------
    width : int
        Input bits consumed per cycle per lane (SIMD), a power of two in 4..4096.
    lanes : int
        Neurons computed in parallel (PE), 1..256.
    max_k : int
        Longest input vector, in values (bits), 1..65536.
    max_n : int
        Most neurons in a layer, >= 1; the weight memory holds `weight_depth` =
        ``ceil(max_n / lanes) * ceil(max_k / width)`` rows of ``lanes * width`` bits (one layer
        of max_k x max_n, or several smaller ones side by side), the threshold memory as many
        rows of ``lanes`` thresholds.
    """

    def __init__(self, *, width, lanes, max_k, max_n):
        _check_count("width", width, 4, 4096)
        if width & (width - 1):
            raise ValueError(f"BinaryEngine width must be a power of two in 4..4096, not {width}")
        _check_count("lanes", lanes, 1, 256)
        _check_count("max_k", max_k, 1, 1 << 16)
        _check_count("max_n", max_n, 1)
        self.width = width
        self.lanes = lanes
        self.max_k = max_k
        self.max_n = max_n
        self.max_folds = -(-max_k // width)
        self.max_neuron_folds = -(-max_n // lanes)
        self.weight_depth = self.max_folds * self.max_neuron_folds
        self.threshold_depth = self.weight_depth
        self.popcount_latency = popcount_latency(width)
        # issue -> activation word and weight row -> tree -> accumulator -> dot and threshold
        # compare -> FIFO write register
        self.fifo_write_latency = self.popcount_latency + 5
        # A slot is reserved at issue and free again the cycle after the result leaves the FIFO
        # (2 cycles through SyncFIFOBuffered + 1 for the counter): the least depth that lets one
        # result per cycle flow (K <= width) without a bubble.
        self.fifo_depth = self.fifo_write_latency + 3
        self.latency = self.popcount_latency + 7
        self.dot_shape = dot_shape(max_k)
        self.threshold_shape = threshold_shape(max_k)

        self.threshold_entry_layout = data.StructLayout({
            "threshold": self.threshold_shape,
            "ascending": 1,
        })
        super().__init__({
            "layer": In(stream.Signature(data.StructLayout({
                "k": range(max_k + 1),
                "neuron_folds": range(self.max_neuron_folds + 1),
                "weight_base": range(self.weight_depth),
                "threshold_base": range(self.threshold_depth),
            }))),
            "weights": In(stream.Signature(data.StructLayout({
                "address": range(self.weight_depth),
                "lane": range(lanes),
                "bits": width,
            }))),
            "thresholds": In(stream.Signature(data.StructLayout({
                "neuron_fold": range(self.threshold_depth),    # the threshold row
                "lane": range(lanes),
                "threshold": self.threshold_shape,
                "ascending": 1,
            }))),
            "activations": In(stream.Signature(data.StructLayout({
                "bits": width,
                "last": 1,
            }))),
            "results": Out(stream.Signature(data.StructLayout({
                "dots": data.ArrayLayout(signed(32), lanes),
                "bits": lanes,
                "last": 1,
            }))),
            "idle": Out(1),
            "framing_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width, lanes = self.width, self.lanes
        width_log2 = width.bit_length() - 1

        # A row written while it is read is never used (the protocol: weights and thresholds of
        # a neuron fold in flight are not overwritten; the activation buffer's row is written
        # in the first neuron fold, which takes the stream word instead), so yosys needs no
        # read-first emulation in front of the data registers (`hw.synthesis`).
        m.submodules.weight_memory = weight_memory = Memory(
            shape=data.ArrayLayout(width, lanes), depth=self.weight_depth, init=[],
            attrs=UNDEFINED_ON_COLLISION)
        weight_write = weight_memory.write_port(granularity=1)
        weight_read = weight_memory.read_port()
        m.submodules.threshold_memory = threshold_memory = Memory(
            shape=data.ArrayLayout(self.threshold_entry_layout, lanes),
            depth=self.threshold_depth, init=[], attrs=UNDEFINED_ON_COLLISION)
        threshold_write = threshold_memory.write_port(granularity=1)
        threshold_read = threshold_memory.read_port()
        m.submodules.activation_buffer = activation_buffer = Memory(
            shape=width, depth=self.max_folds, init=[], attrs=UNDEFINED_ON_COLLISION)
        buffer_write = activation_buffer.write_port()
        buffer_read = activation_buffer.read_port()

        # Weight and threshold loading ------------------------------------------------------------

        threshold_entry = Signal(self.threshold_entry_layout)
        m.d.comb += [
            self.weights.ready.eq(1),
            weight_write.addr.eq(self.weights.payload.address),
            weight_write.data.eq(self.weights.payload.bits.replicate(lanes)),
            weight_write.en.eq(self.weights.valid << self.weights.payload.lane),

            self.thresholds.ready.eq(1),
            threshold_entry.threshold.eq(self.thresholds.payload.threshold),
            threshold_entry.ascending.eq(self.thresholds.payload.ascending),
            threshold_write.addr.eq(self.thresholds.payload.neuron_fold),
            threshold_write.data.eq(threshold_entry.as_value().replicate(lanes)),
            threshold_write.en.eq(self.thresholds.valid << self.thresholds.payload.lane),
        ]

        # Layer descriptor -------------------------------------------------------------------------

        configured = Signal()
        k = Signal(range(self.max_k + 1))
        last_beat = Signal(range(self.max_folds))
        last_neuron_fold = Signal(range(self.max_neuron_folds))
        last_beat_mask = Signal(width)

        weight_base = Signal(range(self.weight_depth))
        threshold_base = Signal(range(self.threshold_depth))

        beat = Signal(range(self.max_folds))
        neuron_fold = Signal(range(self.max_neuron_folds))
        weight_address = Signal(range(self.weight_depth))
        threshold_address = Signal(range(self.threshold_depth))
        issue = Signal()
        # beat == last_beat, beat == 0 and neuron_fold == 0 as flags updated with the counters
        # (timing: the issue and idle decisions start from flip-flops, not comparators).
        is_last_beat = Signal(init=1)
        at_first_beat = Signal(init=1)
        at_first_neuron_fold = Signal(init=1)
        result_issued = issue & is_last_beat
        result_delivered = self.results.valid & self.results.ready
        # Output FIFO slots not yet promised to a result, as registered flags.
        result_slot_free, no_result_outstanding = credit_counter(
            m, slots=self.fifo_depth, take=result_issued, give=result_delivered, name="result")

        # The descriptor is taken into a holding register whenever that is empty and applied
        # when the engine is between vectors (timing: the producer's valid reaches only the
        # holding register, not the issue decision, which starts from flip-flops).
        held_layer = Signal.like(self.layer.payload, name="held_layer", reset_less=True)
        layer_held = Signal()
        between_vectors = at_first_beat & at_first_neuron_fold & no_result_outstanding
        apply_layer = layer_held & between_vectors
        m.d.comb += [
            self.idle.eq(between_vectors & ~layer_held),
            self.layer.ready.eq(~layer_held),
        ]
        with m.If(self.layer.valid & ~layer_held):
            m.d.sync += [held_layer.eq(self.layer.payload), layer_held.eq(1)]
        with m.If(apply_layer):
            layer_k = held_layer.k
            layer_last_beat = (layer_k - 1) >> width_log2
            m.d.sync += [
                layer_held.eq(0),
                configured.eq(1),
                k.eq(layer_k),
                last_beat.eq(layer_last_beat),
                is_last_beat.eq(layer_last_beat == 0),
                last_neuron_fold.eq(held_layer.neuron_folds - 1),
                weight_base.eq(held_layer.weight_base),
                threshold_base.eq(held_layer.threshold_base),
                weight_address.eq(held_layer.weight_base),
                threshold_address.eq(held_layer.threshold_base),
            ]
        # The last beat's mask follows `k` a cycle later, whatever the descriptor does (timing:
        # one LUT from `k`, not the apply decision fanned out to `width` enables). It is first
        # used two cycles after the layer applies (the issue cycle after, then stage 1).
        bits_in_last_beat = k[:width_log2]
        m.d.sync += last_beat_mask.eq(Cat(*((bits_in_last_beat == 0) |
                                            (bits_in_last_beat > position)
                                            for position in range(width))))

        # Issue: one beat per cycle, from the stream (first neuron fold) or the buffer -------------

        from_stream = at_first_neuron_fold
        can_issue = configured & ~apply_layer & (~is_last_beat | result_slot_free)
        m.d.comb += [
            self.activations.ready.eq(can_issue & from_stream),
            issue.eq(can_issue & (~from_stream | self.activations.valid)),

            buffer_write.addr.eq(beat),
            buffer_write.data.eq(self.activations.payload.bits),
            buffer_write.en.eq(self.activations.valid & self.activations.ready),
            buffer_read.addr.eq(beat),
        ]

        with m.If(self.activations.valid & self.activations.ready &
                  (self.activations.payload.last != is_last_beat)):
            m.d.sync += self.framing_error.eq(1)

        with m.If(issue):
            with m.If(is_last_beat):
                m.d.sync += [beat.eq(0), at_first_beat.eq(1), is_last_beat.eq(last_beat == 0)]
                with m.If(neuron_fold == last_neuron_fold):
                    m.d.sync += [neuron_fold.eq(0), at_first_neuron_fold.eq(1),
                                 weight_address.eq(weight_base),
                                 threshold_address.eq(threshold_base)]
                with m.Else():
                    m.d.sync += [neuron_fold.eq(neuron_fold + 1), at_first_neuron_fold.eq(0),
                                 weight_address.eq(weight_address + 1),
                                 threshold_address.eq(threshold_address + 1)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), at_first_beat.eq(0),
                             is_last_beat.eq(beat + 1 == last_beat),
                             weight_address.eq(weight_address + 1)]

        # Beat tags travel beside the data so the datapath needs no stall or enable.
        tag_layout = data.StructLayout({
            "valid": 1,
            "first": 1,
            "last": 1,
            "vector_last": 1,
            "first_neuron_fold": 1,
            "threshold_address": range(self.threshold_depth),
        })
        issued = Signal(tag_layout)
        m.d.comb += [
            issued.valid.eq(issue),
            issued.first.eq(at_first_beat),
            issued.last.eq(is_last_beat),
            issued.vector_last.eq(is_last_beat & (neuron_fold == last_neuron_fold)),
            issued.first_neuron_fold.eq(at_first_neuron_fold),
            issued.threshold_address.eq(threshold_address),
        ]

        # Stage 1: activation word and weight row; stage 2: mismatches into the trees ------------

        activation_tag = delayed(m, issued, 1, name="activation_tag", shape=tag_layout)
        stream_word = Signal(width, reset_less=True)
        activation_word = Signal(width, reset_less=True)
        weight_row = Signal.like(weight_read.data, reset_less=True)
        beat_mask = Signal(width, reset_less=True)
        m.d.comb += weight_read.addr.eq(weight_address)
        m.d.sync += [
            stream_word.eq(self.activations.payload.bits),
            activation_word.eq(Mux(activation_tag.first_neuron_fold, stream_word,
                                   buffer_read.data)),
            weight_row.eq(weight_read.data),
            beat_mask.eq(Mux(activation_tag.last, last_beat_mask, (1 << width) - 1)),
        ]

        tree_tag = delayed(m, activation_tag, 1, name="tree_tag", shape=tag_layout)
        count_tag = delayed(m, tree_tag, self.popcount_latency, name="count_tag",
                            shape=tag_layout)

        total_tag = Signal(tag_layout)
        result_tag = Signal(tag_layout)
        m.d.sync += [
            total_tag.eq(count_tag),
            total_tag.valid.eq(count_tag.valid & count_tag.last),
            result_tag.eq(total_tag),
        ]
        # The thresholds are read a cycle early and registered, so the compares start from
        # flip-flops, not from the memory's read data (timing: the result FIFO's write data).
        m.d.comb += threshold_read.addr.eq(count_tag.threshold_address)
        thresholds = delayed(m, threshold_read.data, 1, name="threshold", reset_less=True)

        entry_layout = data.StructLayout({
            "dots": data.ArrayLayout(self.dot_shape, lanes),
            "bits": lanes,
            "last": 1,
        })
        entry = Signal(entry_layout)

        for lane in range(lanes):
            tree = PopcountTree(width=width)
            m.submodules[f"popcount_{lane}"] = tree
            # Mapped apart from the leaf counts: one LUT per bit, then one per leaf output bit.
            mismatch = Signal(width, name=f"mismatch_{lane}", attrs=MAPPING_BOUNDARY)
            m.d.comb += [mismatch.eq((activation_word ^ weight_row[lane]) & beat_mask),
                         tree.bits.eq(mismatch)]

            mismatches = Signal(range(self.max_k + 1), name=f"mismatches_{lane}", reset_less=True)
            with m.If(count_tag.valid):
                m.d.sync += mismatches.eq(Mux(count_tag.first, 0, mismatches) + tree.count)

            dot = Signal(self.dot_shape, name=f"dot_{lane}", reset_less=True)
            m.d.sync += dot.eq(k - (mismatches << 1))

            threshold = thresholds[lane]
            m.d.comb += [
                entry.dots[lane].eq(dot),
                entry.bits[lane].eq(Mux(threshold.ascending, dot >= threshold.threshold,
                                        dot <= threshold.threshold)),
            ]
        m.d.comb += entry.last.eq(result_tag.vector_last)

        # Output FIFO: a slot was reserved at issue, so the write is never refused -----------------

        m.submodules.result_fifo = result_fifo = SyncFIFOBuffered(
            width=entry_layout.size, depth=self.fifo_depth)
        stored = data.View(entry_layout, result_fifo.r_data)
        # The entry is registered before the FIFO's write port (timing: the threshold compares'
        # carry chains and the distributed-RAM slices of the FIFO are placed apart).
        m.d.comb += [
            result_fifo.w_data.eq(delayed(m, entry, 1, name="fifo_entry", reset_less=True)),
            result_fifo.w_en.eq(delayed(m, result_tag.valid, 1, name="fifo_write")),
            self.results.valid.eq(result_fifo.r_rdy),
            result_fifo.r_en.eq(self.results.ready),
            self.results.payload.bits.eq(stored.bits),
            self.results.payload.last.eq(stored.last),
        ]
        for lane in range(lanes):
            m.d.comb += self.results.payload.dots[lane].eq(stored.dots[lane])

        return m
