"""On-chip buffer hierarchy: scratchpad and accumulator block RAM, double buffering, address
generators (tiled GEMM, on-chip im2col) and the max-pool-on-store unit."""
