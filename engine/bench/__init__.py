"""Benchmarks behind ``keyface bench``."""
