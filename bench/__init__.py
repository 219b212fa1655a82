"""Throughput benchmarks, run with ``uavrl bench``."""
