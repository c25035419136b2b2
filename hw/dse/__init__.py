"""``python -m hw.dse``: design-space exploration of accelerator builds on Dask.

Examples::

    python -m hw.dse --device 12F --rows 2,4 --cols 4,6 --clock 100,125 --seeds 1
    python -m hw.dse --device 45F,85F --rows 8:12:4 --cols 8:12:4 --plot front.png
    python -m hw.dse --spec sweep.toml --scheduler tcp://10.0.0.5:8786

Each option of `hw.dse.space.FIELDS` takes a range (``a,b,c`` or ``start:stop:step``); the sweep
is every combination, the other fields keep the device preset's values, as ``python -m
hw.build`` would. `hw.build.resolve` checks each point first (config values, the PLL and UART for
the clock, the resource budget): points it refuses are pruned and listed with its reason, and bad
ranges, an unknown field or device or an unreachable scheduler stop the sweep before any build.

The rest run on Dask (`hw.dse.sweep`), one task per point, each the build's own flow
(`hw.dse.point`): elaborate, yosys, nextpnr with the seeds one after another on the worker's one
core (the first to meet timing is kept, as in `hw.build`), ecppack. Results are cached by the hash
of the build plan and the tool versions, so a sweep run again builds only new points. Written to
``--out``: each point's build folder, ``results.csv`` and ``results.json`` (config, device, LUT4 /
FF / DSP / EBR used, Fmax, peak GOPS, seed, build seconds, cached, status: pass, fail, timed out,
error, lost or pruned, and the problems). The terminal shows a line per finished point, the table
and the Pareto front of throughput against LUT4 (`hw.dse.pareto`); ``--plot FILE.png`` draws it.
"""
