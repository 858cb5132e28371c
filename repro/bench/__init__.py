"""The benchmark (`python -m repro.bench`): step times, FLOP/s, overheads, fast paths, paper-profile networks."""
