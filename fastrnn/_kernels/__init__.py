"""Numba kernels: ``@njit`` functions on contiguous float arrays and scalars only.

Nothing in this package validates input; the public layer does that first.
"""
