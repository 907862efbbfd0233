"""Noise schedules: limits, monotonicity, derivatives against autograd, σ = −log α, inverses, configs."""
from __future__ import annotations

import math

import pytest
import torch

from textdiff.errors import ConfigError
from textdiff import available, build_schedule

# spec -> (α(0), α(1)) as stated in each schedule's docstring
LIMITS = {
    "loglinear": ({"name": "loglinear"}, 1.0, 1e-3),
    "loglinear_eps0": ({"name": "loglinear", "eps": 0.0}, 1.0, 0.0),
    "linear": ({"name": "linear"}, 1.0, math.exp(-10.0)),
    "cosine": ({"name": "cosine"}, 1.0, 1e-3),
    "geometric": ({"name": "geometric"}, math.exp(-1e-4), math.exp(-20.0)),
    "polynomial": ({"name": "polynomial", "power": 2.0}, 1.0, 1e-3),
    "polynomial_half": ({"name": "polynomial", "power": 0.5}, 1.0, 1e-3),
    "clipped": ({"name": "clipped", "beta": 0.3, "omega": 0.8}, 0.7, 0.2),
}


def test_every_registered_schedule_is_covered():
    assert set(available("schedule")) <= {spec["name"] for spec, _, _ in LIMITS.values()}


@pytest.mark.parametrize("key", list(LIMITS))
def test_limits(key):
    spec, a0, a1 = LIMITS[key]
    s = build_schedule(spec)
    ends = s.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert float(ends[0]) == pytest.approx(a0, abs=1e-12)
    assert float(ends[1]) == pytest.approx(a1, abs=1e-12)


@pytest.mark.parametrize("key", list(LIMITS))
def test_monotone_and_in_unit_interval(key):
    s = build_schedule(LIMITS[key][0])
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a = s.alpha(t)
    assert bool(((a >= 0) & (a <= 1)).all())
    assert bool((a[1:] < a[:-1]).all()), "α must strictly decrease"
    assert bool((s.dalpha(t[1:-1]) < 0).all())


@pytest.mark.parametrize("key", list(LIMITS))
def test_derivatives_match_autograd(key):
    s = build_schedule(LIMITS[key][0])
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64, requires_grad=True)
    (grad_a,) = torch.autograd.grad(s.alpha(t).sum(), t)
    assert torch.allclose(s.dalpha(t.detach()), grad_a, rtol=1e-9, atol=1e-12)
    (grad_s,) = torch.autograd.grad(s.sigma(t).sum(), t)
    assert torch.allclose(s.dsigma(t.detach()), grad_s, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("key", list(LIMITS))
def test_sigma_alpha_mask_rate_agree(key):
    s = build_schedule(LIMITS[key][0])
    t = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    a = s.alpha(t)
    assert torch.allclose(s.sigma(t), -torch.log(a), rtol=1e-10, atol=1e-12)
    assert torch.allclose(s.mask_rate(t), 1 - a, rtol=1e-9, atol=1e-12)
    assert torch.allclose(s.dsigma(t), -s.dalpha(t) / a, rtol=1e-9)


@pytest.mark.parametrize("key", list(LIMITS))
def test_mask_rate_is_accurate_near_zero(key):
    """1 − α at tiny t without cancellation (the masked ELBO weight −α'/(1 − α) depends on it)."""
    s = build_schedule(LIMITS[key][0])
    t = torch.tensor([1e-7, 1e-5], dtype=torch.float64)
    m = s.mask_rate(t)
    # first-order check: (1 − α(t)) − (1 − α(0)) ≈ −α'(0⁺) t, good to a relative 1e-3 at these t
    if key not in ("geometric", "cosine", "polynomial", "polynomial_half"):
        expect = s.mask_rate(torch.zeros(1, dtype=torch.float64)) - s.dalpha(t) * t
        assert torch.allclose(m, expect, rtol=1e-3)
    assert bool((m > 0).all())


@pytest.mark.parametrize("key", list(LIMITS))
def test_t_from_alpha_inverts_alpha(key):
    s = build_schedule(LIMITS[key][0])
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    assert torch.allclose(s.t_from_alpha(s.alpha(t)), t, atol=1e-6)


def test_cosine_small_t_weight():
    # masked ELBO weight −α'/(1 − α) for cosine behaves like 2/t near 0 (needs the stable 1 − α)
    s = build_schedule({"name": "cosine", "eps": 0.0})
    t = torch.tensor([1e-6], dtype=torch.float64)
    assert float(-s.dalpha(t) / s.mask_rate(t) * t) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "clipped", "beta": 0.8, "omega": 0.3},
        {"name": "geometric", "sigma_min": 0.0},
        {"name": "linear", "sigma_min": 5.0, "sigma_max": 1.0},
        {"name": "loglinear", "eps": 1.0},
        {"name": "polynomial", "power": 0.0},
        {"name": "cosine", "eps": -0.1},
        {"name": "cosine", "nope": 1},
    ],
)
def test_bad_configs_raise_one_line_errors(spec):
    with pytest.raises(ConfigError) as err:
        build_schedule(spec)
    assert "\n" not in str(err.value)
