"""Where the systolic array's DSP blocks go on the die: nextpnr ``BEL`` constraints for the PEs.

Left to itself, nextpnr's placer scatters the PEs over the DSP sites (on the ULX3S-85F SoC,
PE(0, 0) and PE(0, 1) landed 18 columns apart, PE(1, 0) 35): every partial sum, operand and
control hop of the array then crosses the die, and the fabric around the DSPs spreads with it.
`dsp_sites` instead lays the array's DSP PEs onto the device's rows of MULT18X18D sites so that
neighbours are neighbours:

* the PE rows are split into contiguous bands, one per DSP row (top band first): the split
  whose fullest DSP row holds the fewest PEs, and among those the one with the taller bands on
  top (equal bands when the rows divide evenly);
* inside a band, the DSP PEs of one column take consecutive sites (``psum`` flows down through
  them, 32 bits per hop), and column j + 1 follows column j (the 8-bit operand ``a`` hops
  ``band height`` sites to the right);
* the band is centred in its DSP row, leaving the spare sites at both ends (the requantizer's
  DSPs, which are not constrained, take them).

A mixed array (`hw.systolic.array`) names its DSP PEs (``on_dsp``); its fabric PEs get no
constraint and the placer puts them beside their neighbours. Whole DSP columns and a partial
one split unevenly: the 85F's 16x16 array with 140 DSP PEs (8 columns and the top 12 PEs of
the ninth) takes bands of 5, 5 and 6 rows, 45 + 45 + 50 of the 3 x 52 sites.

Sites are ``X<x>/Y<y>/MULT18_<n>``: each DSP row is a run of column pairs, alternately
``MULT18_0``/``MULT18_1`` and ``MULT18_4``/``MULT18_5`` (read off nextpnr's placements on these
devices). A device without a table, or an array that does not fit the table's layout, gets no
constraints (`dsp_sites` returns None) and nextpnr places the DSPs as before.
"""

from collections import Counter
from itertools import combinations

__all__ = ["dsp_sites", "DSP_SITE_ROWS"]

# Device -> (y of each DSP row, x of the first column of each site pair), from nextpnr.
DSP_SITE_ROWS = {
    "LFE5U-85F": ((10, 34, 58),
                  (4, 8, 13, 17, 22, 26, 31, 35, 40, 44, 49, 53, 58, 62, 69, 73, 78, 82, 87, 91,
                   96, 100, 105, 109, 114, 118)),
}


def _row_sites(y, pairs):
    sites = []
    for index, x in enumerate(pairs):
        first, second = (0, 1) if index % 2 == 0 else (4, 5)
        sites += [f"X{x}/Y{y}/MULT18_{first}", f"X{x + 1}/Y{y}/MULT18_{second}"]
    return sites


def _band_splits(rows, bands):
    """Every split of ``range(rows)`` into `bands` contiguous (possibly empty) row ranges."""
    for cuts in combinations(range(rows + bands - 1), bands - 1):
        bounds = [cut - index for index, cut in enumerate(cuts)]
        edges = [0, *bounds, rows]
        yield [range(edges[k], edges[k + 1]) for k in range(bands)]


def _best_split(rows, bands, placed):
    """The band split whose fullest band holds the fewest of `placed`; ties: taller bands first."""
    in_row = Counter(i for i, _ in placed)

    def cost(split):
        return max(sum(in_row[i] for i in band) for band in split), [-len(band) for band in split]
    return min(_band_splits(rows, bands), key=cost)


def dsp_sites(device, rows, cols, on_dsp=None):
    """``{(i, j): bel}`` for the DSP PEs of a `rows` x `cols` array on `device` (an ECP5 device
    name such as ``"LFE5U-85F"``), or None when there is no floorplan for it. `on_dsp` is the
    set of ``(i, j)`` on DSP sites (default: every PE)."""
    if device not in DSP_SITE_ROWS:
        return None
    # Column-major, the order a band's PEs take its sites in.
    placed = [(i, j) for j in range(cols) for i in range(rows)
              if on_dsp is None or (i, j) in on_dsp]
    ys, pairs = DSP_SITE_ROWS[device]
    per_row = 2 * len(pairs)
    placement = {}
    for y, band in zip(ys, _best_split(rows, len(ys), placed)):
        in_band = [(i, j) for i, j in placed if i in band]
        if len(in_band) > per_row:
            return None
        sites = _row_sites(y, pairs)
        offset = (per_row - len(in_band)) // 2
        for index, pe in enumerate(in_band):
            placement[pe] = sites[offset + index]
    return placement
