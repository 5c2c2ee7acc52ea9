"""The lab: the apparatus around the lessons. Runs and their files, sweeps, where a run ran, the
command line, and the report split by what it makes.

    runs         one run and its files: RunSpec, run (resumable), the sealed metrics.json, publish
    sweep        a grid of runs, resumable from their files, on a process pool or a Dask cluster
    environment  where a run ran: CPU, kernels, versions, shard count
    cli          the command line (`python -m minifreeze ...`)
    results      metrics.json read back, grouped over seeds, and the paired test behind a verdict
    tables       those rows as Markdown and CSV
    figures      those rows as matplotlib figures
    pages        a folder's report, and the generated tables of the README and docs/

The core (`minifreeze/*.py`) never imports the lab (tests/test_layering.py).
"""
