"""The dimension of each fixed algebra: the one table both `phmscale.nn` (which builds their
structure constants) and `phmscale.spec` (which checks a job's `n` against it) read.

Pure data with no imports, so that `nn` (torch only) and `spec` (pydantic and yaml only) may
both depend on it without depending on each other.
"""

# n of W = Σᵢ Aᵢ ⊗ Sᵢ for each fixed algebra. `phm` (learned rules) is not listed: any n >= 1.
ALGEBRA_DIMS: dict[str, int] = {
    "real": 1,
    "complex": 2,
    "quaternion": 4,
    "octonion": 8,
    "sedenion": 16,
    "m2r": 4,
    "m2c": 8,
    "m3r": 9,
    "m4r": 16,
}
