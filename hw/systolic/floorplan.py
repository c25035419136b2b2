"""Where the systolic array's DSP blocks go on the die: nextpnr ``BEL`` constraints for the PEs.

Left to itself, nextpnr's placer scatters the PEs over the DSP sites (on the ULX3S-85F SoC,
PE(0, 0) and PE(0, 1) landed 18 columns apart, PE(1, 0) 35): every partial sum, operand and
control hop of the array then crosses the die, and the fabric around the DSPs spreads with it.
`dsp_sites` instead lays the R x C array onto the device's rows of MULT18X18D sites so that
neighbours are neighbours:

* the PE rows are split into as many bands as the device has DSP rows (top band first);
* inside a band, the PEs of one column take consecutive sites (``psum`` flows down through
  them, 32 bits per hop), and column j + 1 follows column j (the 8-bit operand ``a`` hops
  ``band height`` sites to the right);
* the layout is centred in the row, leaving the spare sites at both ends (the requantizer's
  DSPs, which are not constrained, take them).

Sites are ``X<x>/Y<y>/MULT18_<n>``: each DSP row is a run of column pairs, alternately
``MULT18_0``/``MULT18_1`` and ``MULT18_4``/``MULT18_5`` (read off nextpnr's placements on these
devices). A device without a table, or an array that does not fit the table's layout, gets no
constraints (`dsp_sites` returns None) and nextpnr places the DSPs as before.
"""

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


def dsp_sites(device, rows, cols):
    """``{(i, j): bel}`` for every PE of a `rows` x `cols` array on `device` (an ECP5 device
    name such as ``"LFE5U-85F"``), or None when there is no floorplan for it."""
    if device not in DSP_SITE_ROWS:
        return None
    ys, pairs = DSP_SITE_ROWS[device]
    band = -(-rows // len(ys))          # PE rows per DSP row
    per_row = 2 * len(pairs)
    used = band * cols
    if used > per_row:
        return None
    offset = (per_row - used) // 2
    placement = {}
    for i in range(rows):
        sites = _row_sites(ys[i // band], pairs)
        for j in range(cols):
            placement[i, j] = sites[offset + j * band + i % band]
    return placement
