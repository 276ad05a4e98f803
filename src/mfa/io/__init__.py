"""Adapters: the only library code that touches disk or network."""
