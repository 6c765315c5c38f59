"""The one error of the benchmarks."""


class BenchError(Exception):
    """The benchmark could not run (a gateway that did not start, a failed handshake)
    or found inconsistent data."""
