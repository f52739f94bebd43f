"""Benchmarks: commands that measure the product and write reports (not tests)."""
