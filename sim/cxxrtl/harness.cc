// Generic C++ driver compiled into every CXXRTL model library (see sim/cxxrtl/toolchain.py).
//
// It only uses the stable CXXRTL C API and named top-level ports, never a design's C++ class, so
// one source serves every design. Python calls it through ctypes to run many clock cycles per call
// (a ctypes round trip costs about as much as simulating a small design for one cycle).
//
// One clock cycle (`tick`), with a single rising-edge clock domain:
//
//   inputs written -> settle (clk=0, eval+commit) -> [VCD sample at t] -> clk=1, settle
//   -> [VCD sample at t + half period] -> clk=0 written, applied by the next settle
//
// so values read after `settle` are what an Amaranth testbench sees before `await ctx.tick()`.

#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern "C" cxxrtl_toplevel cxxrtl_design_create();

namespace {

size_t chunks_of(const cxxrtl_object *object) {
	return (object->width + 31) / 32;
}

void write_object(cxxrtl_object *object, const uint32_t *words) {
	memcpy(object->next, words, chunks_of(object) * sizeof(uint32_t));
}

void write_bit(cxxrtl_object *object, bool bit) {
	object->next[0] = bit;
}

bool read_bit(const cxxrtl_object *object) {
	return object->curr[0] & 1;
}

// splitmix64: small, fast and good enough to decide gaps and stalls.
struct random_source {
	uint64_t state;
	double next_unit() {
		uint64_t z = (state += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		return (z >> 11) * (1.0 / 9007199254740992.0);
	}
	bool chance(double probability) {
		return probability > 0.0 && next_unit() < probability;
	}
};

} // namespace

extern "C" {

struct ecpnn_sim {
	cxxrtl_handle handle;
	cxxrtl_object *clock;        // NULL for purely combinational designs
	uint64_t cycles;
	uint64_t half_period_ps;
	cxxrtl_vcd vcd;
	FILE *vcd_file;
};

// A stream source: presents `items[sent]` on valid/payload until ready, with random gaps between
// items. Every item is `ceil(payload width / 32)` little-endian 32-bit words.
struct ecpnn_source {
	cxxrtl_object *valid, *ready, *payload;
	const uint32_t *items;
	uint64_t count;
	double gap_probability;
	uint64_t sent;               // out
	int presenting;              // in/out: valid is asserted with items[sent]
};

// A stream sink: asserts ready except on random stall cycles, stores accepted payloads.
// `wanted` == 0 means "whatever arrives until the cycle limit" (at most `capacity` items).
struct ecpnn_sink {
	cxxrtl_object *valid, *ready, *payload;
	uint32_t *items;
	uint64_t capacity;
	uint64_t wanted;
	double stall_probability;
	uint64_t received;           // out
};

ecpnn_sim *ecpnn_sim_create(const char *clock_name) {
	ecpnn_sim *sim = new ecpnn_sim();
	sim->handle = cxxrtl_create(cxxrtl_design_create());
	sim->clock = clock_name ? cxxrtl_get(sim->handle, clock_name) : nullptr;
	sim->half_period_ps = 5000;
	cxxrtl_step(sim->handle);
	return sim;
}

cxxrtl_handle ecpnn_sim_handle(ecpnn_sim *sim) {
	return sim->handle;
}

static void flush_vcd(ecpnn_sim *sim) {
	const char *data;
	size_t size;
	for (;;) {
		cxxrtl_vcd_read(sim->vcd, &data, &size);
		if (size == 0)
			break;
		fwrite(data, 1, size, sim->vcd_file);
	}
}

static void sample_vcd(ecpnn_sim *sim, uint64_t time_ps) {
	if (!sim->vcd)
		return;
	cxxrtl_vcd_sample(sim->vcd, time_ps);
	flush_vcd(sim);
}

// Returns 0 on success, -1 if the file cannot be opened. Must be called before the first tick.
int ecpnn_sim_vcd_open(ecpnn_sim *sim, const char *path, uint64_t half_period_ps) {
	FILE *file = fopen(path, "wb");
	if (!file)
		return -1;
	sim->vcd_file = file;
	sim->half_period_ps = half_period_ps;
	sim->vcd = cxxrtl_vcd_create();
	cxxrtl_vcd_timescale(sim->vcd, 1, "ps");
	cxxrtl_vcd_add_from(sim->vcd, sim->handle);
	return 0;
}

void ecpnn_sim_destroy(ecpnn_sim *sim) {
	if (sim->vcd) {
		sample_vcd(sim, 2 * sim->cycles * sim->half_period_ps);
		cxxrtl_vcd_destroy(sim->vcd);
		fclose(sim->vcd_file);
	}
	cxxrtl_destroy(sim->handle);
	delete sim;
}

void ecpnn_sim_settle(ecpnn_sim *sim) {
	cxxrtl_step(sim->handle);
}

uint64_t ecpnn_sim_cycles(ecpnn_sim *sim) {
	return sim->cycles;
}

// The rising edge, with inputs already settled.
static void edge(ecpnn_sim *sim) {
	uint64_t start_ps = 2 * sim->cycles * sim->half_period_ps;
	sample_vcd(sim, start_ps);
	if (sim->clock) {
		write_bit(sim->clock, true);
		cxxrtl_step(sim->handle);
		sample_vcd(sim, start_ps + sim->half_period_ps);
		write_bit(sim->clock, false);
	}
	sim->cycles++;
}

void ecpnn_sim_tick(ecpnn_sim *sim, uint64_t count) {
	for (uint64_t i = 0; i < count; i++) {
		cxxrtl_step(sim->handle);
		edge(sim);
	}
	cxxrtl_step(sim->handle);
}

// Ticks until `signal` equals `value` (checked before each edge). Returns the number of ticks
// taken, or -1 if `max_cycles` ticks passed first.
int64_t ecpnn_sim_run_until(ecpnn_sim *sim, cxxrtl_object *signal, const uint32_t *value,
                            uint64_t max_cycles) {
	size_t size = chunks_of(signal) * sizeof(uint32_t);
	for (uint64_t ticks = 0;; ticks++) {
		cxxrtl_step(sim->handle);
		if (memcmp(signal->curr, value, size) == 0)
			return (int64_t)ticks;
		if (ticks == max_cycles)
			return -1;
		edge(sim);
	}
}

static bool streams_done(const ecpnn_source *sources, size_t source_count,
                         const ecpnn_sink *sinks, size_t sink_count) {
	for (size_t i = 0; i < source_count; i++)
		if (sources[i].sent < sources[i].count)
			return false;
	for (size_t i = 0; i < sink_count; i++)
		if (sinks[i].wanted == 0 || sinks[i].received < sinks[i].wanted)
			return false;
	return true;
}

// Moves items through any number of stream sources and sinks until every source is drained and
// every sink with `wanted` > 0 has that many items, or `max_cycles` ticks passed.
// Returns 1 when done, 0 on reaching the cycle limit. Leaves every ready deasserted, and every
// valid deasserted except where an item is still on offer (`presenting` stays set): streams must
// not withdraw an offer, so the next call continues with that item (no gap before it).
int ecpnn_sim_run_streams(ecpnn_sim *sim, ecpnn_source *sources, size_t source_count,
                          ecpnn_sink *sinks, size_t sink_count, uint64_t max_cycles,
                          uint64_t seed, uint64_t *cycles_taken) {
	random_source random = { seed };
	uint64_t ticks = 0;
	bool done;
	while (!(done = streams_done(sources, source_count, sinks, sink_count)) && ticks < max_cycles) {
		for (size_t i = 0; i < source_count; i++) {
			ecpnn_source &source = sources[i];
			if (!source.presenting && source.sent < source.count && !random.chance(source.gap_probability))
				source.presenting = 1;
			if (source.presenting)
				write_object(source.payload, source.items + source.sent * chunks_of(source.payload));
			write_bit(source.valid, source.presenting);
		}
		for (size_t i = 0; i < sink_count; i++) {
			ecpnn_sink &sink = sinks[i];
			bool room = sink.received < (sink.wanted ? sink.wanted : sink.capacity);
			write_bit(sink.ready, room && !random.chance(sink.stall_probability));
		}
		cxxrtl_step(sim->handle);
		for (size_t i = 0; i < source_count; i++) {
			ecpnn_source &source = sources[i];
			if (source.presenting && read_bit(source.ready)) {
				source.sent++;
				source.presenting = 0;
			}
		}
		for (size_t i = 0; i < sink_count; i++) {
			ecpnn_sink &sink = sinks[i];
			if (read_bit(sink.ready) && read_bit(sink.valid)) {
				size_t words = chunks_of(sink.payload);
				memcpy(sink.items + sink.received * words, sink.payload->curr, words * sizeof(uint32_t));
				sink.received++;
			}
		}
		edge(sim);
		ticks++;
	}
	for (size_t i = 0; i < source_count; i++)
		write_bit(sources[i].valid, sources[i].presenting);
	for (size_t i = 0; i < sink_count; i++)
		write_bit(sinks[i].ready, false);
	cxxrtl_step(sim->handle);
	*cycles_taken = ticks;
	return done;
}

} // extern "C"
