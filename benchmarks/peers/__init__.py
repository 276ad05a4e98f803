"""Peer engines of the scale benchmark (``benchmarks/SPEC.md``).

Each module has ``run(register, districts, lookups, output)``: it reads the synthetic
city's ``register.parquet`` and ``districts.parquet`` and the lookup tables written by
``benchmarks/lookup.py``, and writes ``output/buildings.parquet`` and
``output/districts.parquet``. Each is written the way a competent user of its tool would
write it: idiomatic, neither deliberately slow nor heroically tuned.
"""
