import numpy as np
import pytest

from framework.samplers.exp_integrator import (
    KERNELS, lagrange_basis, lagrange_exp_weights, lagrange_integral_weights, phi, quadrature_exp_weights,
)


@pytest.mark.parametrize("kind", KERNELS)
@pytest.mark.parametrize("nodes", [[0.2], [0.2, -0.3], [0.2, -0.3, -0.7], [0.2, -0.3, -0.7, -1.2]])
@pytest.mark.parametrize("h", [1e-3, 0.05, 0.4, 1.5])
def test_closed_form_matches_quadrature(kind, nodes, h):
    exact = lagrange_exp_weights(nodes, 0.2, 0.2 + h, kind)
    quad = quadrature_exp_weights([lagrange_basis(nodes, j) for j in range(len(nodes))], 0.2, 0.2 + h, kind)
    assert np.allclose(exact, quad, rtol=0, atol=1e-8 * max(1.0, h))


def test_phi_small_and_large_agree_with_definition():
    for k in range(1, 5):
        for h in (-2.0, -0.3, 1e-4, 0.49, 0.51, 2.0):
            s = np.linspace(0, 1, 200001)
            ref = np.trapezoid(np.exp((1 - s) * h) * s ** (k - 1), s) / np.prod(range(1, k))
            assert phi(k, h) == pytest.approx(ref, rel=1e-8)


def test_adams_bashforth_weights():
    # AB2 on unit steps: nodes 0 and -1, step 0 -> 1: weights 3/2, -1/2
    assert np.allclose(lagrange_integral_weights([0.0, -1.0], 0.0, 1.0), [1.5, -0.5])
