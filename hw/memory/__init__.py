"""On-chip buffer hierarchy: scratchpad and accumulator block RAM and the on-chip im2col address
generator that feeds the array from them."""

# Width of every scratchpad/accumulator/parameter row address in commands and address streams;
# the core checks each command against the real depths.
ROW_ADDRESS_BITS = 16

