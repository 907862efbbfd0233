"""Forward processes: corruption marginals, closed-form losses against their generic definitions,
score entropy properties, reverse steps, masked options, config switching and incompatible pairings.
(The NELBO-vs-exact-NLL oracle tests live in test_processes_oracle.py; AR in test_processes_ar.py.)"""
from __future__ import annotations

import math

import pytest
import torch

from textdiff.config import load_recipe
from textdiff.errors import ConfigError, IncompatibleError
from textdiff.objective import nelbo_terms
from textdiff.processes.score_entropy import score_entropy
from textdiff import build_process, build_sampler

V, MASK = 7, 6  # vocabulary with a [MASK] token at the end
ALL = ["masked", "sedd_absorb", "uniform", "sedd_uniform", "ar"]


def make(name, **kw):
    return build_process(dict({"name": name}, **kw), vocab_size=V, mask_id=MASK)


def rand_case(seed=0, B=4, L=5, mask_ok=True):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, V - 1, (B, L), generator=g)
    xt = torch.randint(0, V if mask_ok else V - 1, (B, L), generator=g)
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return x0, xt, logits, t


# ---- corruption marginals ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("t", [0.2, 0.7])
def test_corruption_marginals_match_the_schedule(name, t):
    p = make(name)
    n = 40000
    x0 = torch.full((n, 2), 2)
    xt = p.corrupt(x0, torch.full((n,), t), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(xt.flatten(), minlength=V).double() / xt.numel()
    a = float(p.alpha(torch.tensor(t)))
    expect = torch.zeros(V, dtype=torch.float64)
    if name == "ar":
        expect[2] = 1.0
    elif p.needs_mask_token:
        expect[2], expect[MASK] = a, 1 - a
    else:
        expect += (1 - a) / V
        expect[2] += a
    assert torch.allclose(freq, expect, atol=4 * (0.25 / xt.numel()) ** 0.5 + 1e-12), (freq, expect)


@pytest.mark.parametrize("name", ["masked", "sedd_absorb", "uniform", "sedd_uniform"])
def test_per_token_times_and_frozen_positions(name):
    p = make(name)
    x0 = torch.full((3000, 4), 1)
    t = torch.tensor([0.0, 0.3, 0.6, 0.999]).expand(3000, 4)  # [B, L] one time per token
    frozen = torch.zeros(3000, 4, dtype=torch.bool)
    frozen[:, 3] = True
    xt = p.corrupt(x0, t, frozen=frozen, generator=torch.Generator().manual_seed(0))
    kept = (xt == x0).double().mean(0)
    a = p.alpha(torch.tensor([0.0, 0.3, 0.6]))
    stay = a if p.needs_mask_token else a + (1 - a) / V
    assert torch.allclose(kept[:3], stay.double(), atol=0.03)
    assert bool((xt[:, 3] == 1).all()), "frozen positions must stay clean"


def test_priors():
    assert bool((make("masked").prior((2, 3)) == MASK).all())
    assert bool((make("sedd_absorb").prior((2, 3)) == MASK).all())
    u = make("uniform").prior((20000,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.bincount(u, minlength=V).double() / 20000, torch.full((V,), 1 / V, dtype=torch.float64), atol=0.01)


def test_uniform_prior_loss_is_the_kl_to_uniform():
    p = make("uniform")  # loglinear: α(1) = 1e-3
    a1 = 1e-3
    q = torch.full((V,), (1 - a1) / V, dtype=torch.float64)
    q[0] += a1
    kl = float((q * torch.log(q * V)).sum())
    assert float(p.prior_loss(torch.zeros(1, 1, dtype=torch.long))) == pytest.approx(kl, rel=1e-5)
    assert float(make("uniform", schedule={"name": "loglinear", "eps": 0.0}).prior_loss(torch.zeros(1, 1, dtype=torch.long))) == 0.0


# ---- closed forms against the generic CTMC / score-entropy definitions --------------------------


def conditional_ratios(p, x_t, x0, t):
    """r_y = q_t(y | x0) / q_t(x_t | x0) [B, L, V] and the forward rate Q(y -> x_t) [B, L, V]."""
    a = p.alpha(p.per_token(t, x0).double())[..., None]
    if p.needs_mask_token:
        q = torch.nn.functional.one_hot(x0, V).double() * a
        q[..., MASK] = (1 - a)[..., 0]
    else:
        q = torch.nn.functional.one_hot(x0, V).double() * a + (1 - a) / V
    r = q / q.gather(-1, x_t[..., None])
    sig = p.schedule.dsigma(p.per_token(t, x0).double())[..., None]
    if p.needs_mask_token:  # only clean tokens flow, into [MASK], at rate σ'
        rate = torch.where((x_t == MASK)[..., None], sig.expand_as(r), torch.zeros_like(r))
        rate = rate.index_fill(-1, torch.tensor([MASK]), 0.0)
    else:
        rate = (sig / V).expand_as(r).clone()
    return r, rate.scatter(-1, x_t[..., None], 0.0)


@pytest.mark.parametrize("name", ["sedd_absorb", "sedd_uniform"])
def test_sedd_closed_form_equals_generic_score_entropy(name):
    p = make(name)
    x0, xt, logits, t = rand_case(1, mask_ok=name == "sedd_uniform")
    xt[0] = x0[0]  # include x_t = x0 rows
    if name == "sedd_absorb":  # only x0 itself or [MASK] are possible
        xt = torch.where(torch.rand(xt.shape, generator=torch.Generator().manual_seed(2)) < 0.5, MASK, x0)
    r, rate = conditional_ratios(p, xt, x0, t)
    log_s = p.log_score(logits, xt, t).clamp_min(-1e30)
    generic = score_entropy(log_s, r, rate)
    assert torch.allclose(p.loss(logits, xt, x0, t).double(), generic, rtol=1e-9, atol=1e-9)


def test_udlm_closed_form_equals_the_ctmc_nelbo():
    """Σ_{y≠x_t} [R̂ − R log R̂ + R log R − R] with R̂ = (σ'/V) x̄_θ,y / x̄_θ,x_t (UDLM's reverse rate)."""
    p = make("uniform")
    x0, xt, logits, t = rand_case(2)
    xt[1] = x0[1]
    r, rate = conditional_ratios(p, xt, x0, t)
    a = p.alpha(p.per_token(t, x0).double())[..., None]
    xbt = V * a * logits.softmax(-1) + (1 - a)
    log_s_hat = torch.log(xbt / xbt.gather(-1, xt[..., None]))  # R̂ / Q = x̄_θ ratio
    generic = score_entropy(log_s_hat, r, rate)
    assert torch.allclose(p.loss(logits, xt, x0, t).double(), generic, rtol=1e-9, atol=1e-9)
    assert torch.allclose(p.loss(logits.float(), xt, x0, t).double(), generic, rtol=1e-4, atol=1e-5)


# ---- score entropy --------------------------------------------------------------------------------


def test_score_entropy_zero_at_truth_positive_elsewhere_flat_gradient():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(6, 9, generator=g, dtype=torch.float64) * 3
    r[0, 0] = 0.0  # K(0) = 0: a state the truth never visits
    w = torch.rand(6, 9, generator=g, dtype=torch.float64)
    log_s = torch.log(r.clamp_min(1e-300)).clone().requires_grad_(True)
    at_truth = score_entropy(log_s, r, w)
    (grad,) = torch.autograd.grad(at_truth.sum(), log_s)
    assert float(at_truth.detach().abs().max()) < 1e-12
    assert float(grad[r > 0].abs().max()) < 1e-12
    for scale in (0.5, 1.5):
        off = score_entropy(torch.log(r.clamp_min(1e-300)) + torch.log(torch.tensor(scale)), r, w)
        assert bool((off > 0).all())
    noisy = score_entropy(torch.log(r.clamp_min(1e-300)) + 0.1 * torch.randn(6, 9, generator=g, dtype=torch.float64), r, w)
    assert bool((noisy > 0).all())


@pytest.mark.parametrize("name", ["sedd_absorb", "sedd_uniform"])
def test_sedd_loss_vanishes_at_the_true_ratios(name):
    """With a point-mass data law the true ratios are the conditional ones: loss 0, gradient 0."""
    p = make(name)
    x0, xt, _, t = rand_case(3)
    if name == "sedd_absorb":
        xt = torch.where(torch.rand(xt.shape, generator=torch.Generator().manual_seed(0)) < 0.6, MASK, x0)
    r, _ = conditional_ratios(p, xt, x0, t)
    a = p.alpha(p.per_token(t, x0).double())[..., None]
    if name == "sedd_absorb":  # logits = l̃ + log(V − 1), with exp(l̃) = p(x0 | x_t) = onehot(x0)
        logits = torch.where(torch.nn.functional.one_hot(x0, V).bool(), 0.0, -60.0).double() + math.log(V - 1)
    else:
        logits = torch.log(r.clamp_min(1e-300))
    logits = logits.clone().requires_grad_(True)
    loss = p.loss(logits, xt, x0, t)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert float(loss.detach().abs().max()) < 1e-9
    assert float(grad.abs().max()) < 1e-9
    assert bool((p.loss(logits.detach() + 0.3 * torch.randn(logits.shape, dtype=torch.float64), xt, x0, t) >= 0).all())
    assert float(p.loss(logits.detach() * 1.1 + 0.2, xt, x0, t).sum()) > 1e-3


def test_sedd_absorb_bounds_the_masked_loss_and_equals_it_when_normalised():
    x0, _, logits, t = rand_case(4)
    xt = torch.full_like(x0, MASK)
    masked, sedd = make("masked"), make("sedd_absorb")
    free = sedd.loss(logits, xt, x0, t)
    assert bool((free >= masked.loss(logits, xt, x0, t).double() - 1e-6).all())
    lg = logits.clone()
    lg[..., MASK] = -float("inf")
    normalised = torch.log_softmax(lg, -1) + math.log(V - 1)  # Σ exp(l̃) = 1
    assert torch.allclose(sedd.loss(normalised, xt, x0, t), masked.loss(logits, xt, x0, t).double(), atol=1e-6)


# ---- reverse steps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sedd_absorb", "sedd_uniform", "uniform"])
def test_reverse_rates_are_rate_matrix_rows(name):
    p = make(name)
    x0, xt, logits, t = rand_case(5)
    if name != "sedd_absorb":
        xt = xt.clamp_max(V - 2)
    rate = p.reverse_rate(logits, xt, t)
    off = rate.scatter(-1, xt[..., None], 0.0)
    assert bool((off >= 0).all())
    assert torch.allclose(rate.sum(-1), torch.zeros(rate.shape[:-1], dtype=rate.dtype), atol=1e-9)
    if name == "sedd_absorb":
        assert bool((rate[xt != MASK] == 0).all()), "clean tokens never move on the absorbing graph"


@pytest.mark.parametrize("name", ["sedd_absorb", "sedd_uniform", "uniform", "masked"])
def test_reverse_probs_are_distributions(name):
    p = make(name)
    _, xt, logits, t = rand_case(6)
    probs = p.reverse_probs(logits, xt, t, t * 0.5)
    assert probs.dtype == torch.float64 and bool((probs >= 0).all())
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1], dtype=torch.float64))


def test_sedd_absorb_analytic_step_is_the_masked_posterior_for_normalised_scores():
    x0, _, logits, t = rand_case(7)
    xt = torch.where(torch.rand(x0.shape, generator=torch.Generator().manual_seed(1)) < 0.5, MASK, x0)
    lg = logits.clone()
    lg[..., MASK] = -float("inf")
    normalised = torch.log_softmax(lg, -1) + math.log(V - 1)
    s = t * 0.6
    assert torch.allclose(make("sedd_absorb").analytic_probs(normalised, xt, t, s),
                          make("masked").reverse_probs(logits, xt, t, s), atol=1e-9)
    final = make("sedd_absorb").analytic_probs(logits, xt, t, torch.zeros_like(t))
    assert bool((final[..., MASK] == 0).all()), "the last step (s = 0) leaves no [MASK]"


def test_sedd_uniform_analytic_step_is_exact_with_exact_ratios():
    """One token, data law p0: with s_y = p_t(y)/p_t(x) the Tweedie step gives p_s(y) q(x|y) / p_t(x)."""
    p = make("sedd_uniform")
    p0 = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.02], dtype=torch.float64)
    t, s = torch.tensor([0.7], dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64)
    marg = lambda tt: float(p.alpha(tt)) * p0 + (1 - float(p.alpha(tt))) / V  # noqa: E731
    pt, ps = marg(t), marg(s)
    for x in range(V):
        xt = torch.tensor([[x]])
        logits = torch.log(pt / pt[x])[None, None]
        tau = float(p.alpha(t) / p.alpha(s))
        q_x_given_y = tau * (torch.arange(V) == x).double() + (1 - tau) / V
        expect = ps * q_x_given_y / pt[x]
        assert torch.allclose(p.analytic_probs(logits, xt, t, s)[0, 0], expect, atol=1e-12)


def test_udlm_posterior_with_a_known_x0_is_bayes():
    p = make("uniform")
    x0, xt, _, t = rand_case(8)
    xt = xt.clamp_max(V - 2)
    s = t * 0.5
    logits = torch.where(torch.nn.functional.one_hot(x0, V).bool(), 0.0, -1e4).double()
    a_t = p.alpha(p.per_token(t, x0).double())[..., None]
    a_s = p.alpha(p.per_token(s, x0).double())[..., None]
    oh = lambda z: torch.nn.functional.one_hot(z, V).double()  # noqa: E731
    q_s = a_s * oh(x0) + (1 - a_s) / V  # q(x_s | x0)
    q_ts = (a_t / a_s) * oh(xt) + (1 - a_t / a_s) / V  # q(x_t | x_s = y)
    expect = q_s * q_ts / (q_s * q_ts).sum(-1, keepdim=True)
    assert torch.allclose(p.reverse_probs(logits, xt, t, s), expect, atol=1e-9)


def test_sedd_uniform_x0_probs_invert_the_ratios():
    p = make("sedd_uniform")
    p0 = torch.softmax(torch.randn(V, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    t = torch.tensor([0.5], dtype=torch.float64)
    a = float(p.alpha(t))
    pt = a * p0 + (1 - a) / V
    x = 3
    post = p0 * (a * (torch.arange(V) == x).double() + (1 - a) / V)
    post = post / post.sum()
    got = p.x0_probs(torch.log(pt / pt[x])[None, None], torch.tensor([[x]]), t)[0, 0]
    assert torch.allclose(got, post, atol=1e-10)


# ---- masked options ---------------------------------------------------------------------------------


def test_masked_loss_weights():
    x0, _, logits, t = rand_case(9)
    xt = torch.full_like(x0, MASK)
    elbo = make("masked", schedule={"name": "loglinear", "eps": 0.0}).loss(logits, xt, x0, t)
    flat = make("masked", loss_weight="flat").loss(logits, xt, x0, t)
    lg = logits.clone()
    lg[..., MASK] = -float("inf")
    ce = -torch.log_softmax(lg, -1).gather(-1, x0[..., None]).squeeze(-1)
    assert torch.allclose(flat.double(), ce, atol=1e-5)  # flat: plain cross-entropy (not a bound)
    assert torch.allclose(elbo.double(), ce / t[:, None], rtol=1e-5)  # ELBO: weight 1/t
    with pytest.raises(ConfigError):
        make("masked", loss_weight="inverse")


class Spy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, input_ids, t=None, **kw):
        self.seen.append(t)
        return type("O", (), {"logits": torch.zeros(*input_ids.shape, V)})()


@pytest.mark.parametrize("name", ["masked", "sedd_absorb", "uniform", "sedd_uniform"])
@pytest.mark.parametrize("tc", [False, True])
def test_time_conditioning_option_feeds_t(name, tc):
    p, spy = make(name, time_conditioning=tc), Spy()
    nelbo_terms(spy, p, torch.zeros(2, 3, dtype=torch.long))
    assert (spy.seen[0] is not None) == tc


# ---- switching and pairing --------------------------------------------------------------------------


RECIPE = {
    "tokenizer": {"train": "bpe", "vocab_size": 64},
    "data": {"seq_len": 8},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
    "process": {"name": "masked"},
}


@pytest.mark.parametrize("name", ALL)
def test_switching_process_is_one_config_line(name):
    from textdiff.models import TextDiffModel
    from textdiff.models.build import check_model_process, denoiser_config

    recipe = load_recipe(raw={k: dict(v) for k, v in RECIPE.items()}, overrides=[f"process.name={name}"])
    process = build_process(recipe.process, vocab_size=V, mask_id=MASK)
    assert process.config.name == name
    torch.manual_seed(0)
    model = TextDiffModel(denoiser_config(recipe.model, V, process, 8, MASK))
    check_model_process(model, process, 8)
    terms = nelbo_terms(model, process, torch.randint(0, V - 1, (3, 8)), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms.loss).all() and float(terms.mean().detach()) > 0
    terms.mean().backward()
    assert model.lm_head.weight.grad is not None


def test_incompatible_pairings_raise_one_line_errors():
    from textdiff.generation import check_compatible
    from textdiff.models import TextDiffConfig, TextDiffModel

    free = TextDiffModel(TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2))
    timed = TextDiffModel(TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, time_conditioning=True, cond_dim=16))
    errors = []
    for model, process in [(free, make("sedd_uniform", time_conditioning=True)), (timed, make("uniform")),
                           (free, make("masked", time_conditioning=True))]:
        with pytest.raises(IncompatibleError) as e:
            check_compatible(model, process)
        errors.append(e)
    with pytest.raises(IncompatibleError) as e:
        build_sampler("ancestral", make("sedd_uniform"))
    errors.append(e)
    with pytest.raises(IncompatibleError) as e:
        make("uniform").is_noise(torch.zeros(1, 1, dtype=torch.long))
    errors.append(e)
    with pytest.raises(IncompatibleError) as e:
        build_process("sedd_absorb", vocab_size=V)  # no mask token
    errors.append(e)
    with pytest.raises(ConfigError) as e:
        make("ar", time_conditioning=True)
    errors.append(e)
    assert all("\n" not in str(x.value) for x in errors)
