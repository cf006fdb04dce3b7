"""Each fixed algebra against an independent reference of its product: a PHMLinear with
in = out = n and S = w (one algebra element) maps x to w·x."""

from __future__ import annotations

import pytest
import torch

from phmscale.nn import ALGEBRA_DIMS, PHMLinear, algebra_dim, algebra_rules, structure_constants

Vec = list[float]


def cd_mul(x: Vec, y: Vec) -> Vec:
    """Cayley–Dickson product on Python lists: (a,b)(c,d) = (ac − d̄b, da + bc̄)."""
    if len(x) == 1:
        return [x[0] * y[0]]
    m = len(x) // 2
    a, b, c, d = x[:m], x[m:], y[:m], y[m:]

    def conj(v: Vec) -> Vec:
        return [v[0]] + [-t for t in v[1:]]

    first = [s - t for s, t in zip(cd_mul(a, c), cd_mul(conj(d), b), strict=True)]
    second = [s + t for s, t in zip(cd_mul(d, a), cd_mul(b, conj(c)), strict=True)]
    return first + second


def hamilton(w: Vec, x: Vec) -> Vec:
    a1, b1, c1, d1 = w
    a2, b2, c2, d2 = x
    return [
        a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
    ]


def reference(name: str, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w·x for one element w (n,) and a batch x (B, n), computed without the layer's tables."""
    if name == "real":
        return w * x
    if name == "complex":
        z = torch.complex(w[0], w[1]) * torch.complex(x[:, 0], x[:, 1])
        return torch.stack([z.real, z.imag], dim=1)
    if name == "quaternion":
        return torch.tensor([hamilton(w.tolist(), row) for row in x.tolist()], dtype=x.dtype)
    if name in ("octonion", "sedenion"):
        return torch.tensor([cd_mul(w.tolist(), row) for row in x.tolist()], dtype=x.dtype)
    if name in ("m2r", "m3r", "m4r"):
        k = int(name[1])
        return (w.reshape(k, k) @ x.reshape(-1, k, k)).reshape(-1, k * k)
    if name == "m2c":
        wc = torch.complex(w[:4], w[4:]).reshape(2, 2)
        xc = torch.complex(x[:, :4], x[:, 4:]).reshape(-1, 2, 2)
        z = (wc @ xc).reshape(-1, 4)
        return torch.cat([z.real, z.imag], dim=1)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(ALGEBRA_DIMS))
def test_layer_computes_the_algebra_product(name: str) -> None:
    n = ALGEBRA_DIMS[name]
    torch.manual_seed(n)
    layer = PHMLinear(n, n, algebra=name, bias=False, dtype=torch.float64)
    w = torch.randn(n, dtype=torch.float64)
    x = torch.randn(5, n, dtype=torch.float64)
    with torch.no_grad():
        layer.S.copy_(w.view(n, 1, 1))
    expected = reference(name, w, x)
    for algorithm in ("materialize", "structured"):
        layer.algorithm = algorithm
        torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_complex_layer_is_a_complex_matmul_over_blocks() -> None:
    """Layout: n contiguous blocks; S[0] = Re W, S[1] = Im W of a complex (p, q) matrix."""
    torch.manual_seed(0)
    p, q = 3, 5
    layer = PHMLinear(2 * q, 2 * p, algebra="complex", bias=False, dtype=torch.float64)
    wc = torch.randn(p, q, dtype=torch.complex128)
    xc = torch.randn(7, q, dtype=torch.complex128)
    with torch.no_grad():
        layer.S.copy_(torch.stack([wc.real, wc.imag]))
    y = layer(torch.cat([xc.real, xc.imag], dim=1))
    z = xc @ wc.T
    torch.testing.assert_close(y, torch.cat([z.real, z.imag], dim=1))


def test_quaternion_basis_has_ij_equal_k() -> None:
    T = structure_constants("quaternion")
    assert T[1, 2].tolist() == [0, 0, 0, 1]  # i·j = k
    assert T[2, 1].tolist() == [0, 0, 0, -1]  # j·i = −k
    assert T[1, 1].tolist() == [-1, 0, 0, 0]


@pytest.mark.parametrize("name", list(ALGEBRA_DIMS))
def test_rules_are_left_multiplication_matrices(name: str) -> None:
    T = structure_constants(name, torch.float64)
    A = algebra_rules(name, torch.float64)
    n = algebra_dim(name)
    assert A.shape == T.shape == (n, n, n)
    assert torch.equal(A, T.permute(0, 2, 1))  # A[i][k, j] = T[i, j, k]
    assert torch.equal(A[0], torch.eye(n, dtype=torch.float64)) or name.startswith("m")


def test_one_dims_table_for_layers_and_job_spec() -> None:
    """nn and spec read the same object from the dependency-free phmscale.algebra_dims."""
    from phmscale import algebra_dims

    spec = pytest.importorskip("phmscale.spec")
    assert spec.ALGEBRA_DIMS is ALGEBRA_DIMS is algebra_dims.ALGEBRA_DIMS
