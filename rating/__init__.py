"""Price plans, fixed-point money, the Numba rating kernels and their Decimal oracle."""
