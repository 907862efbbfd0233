"""Row kernels for the uniform-graph processes (UDLM's ``uniform``, SEDD's ``sedd_uniform``).

Every position may move at every step, so each row of the logits is read once per step; these
kernels read it ONCE, in float64 chunks, and decompose the one-step law so that only the rows that
jump pay for a draw over V. With p0 = softmax(l) (e = exp(l − max l), Z = Σ e), per position x:

* UDLM posterior (``UniformProcess.reverse_probs``): p(y) ∝ [α_{t|s} δ_{y,x} + (1 − α_{t|s})/V] q(y),
  q = α_s p0 + (1 − α_s)/V. So: stay w.p. α_{t|s} q(x) / (α_{t|s} q(x) + (1 − α_{t|s})/V), else
  y ~ q: y ~ p0 w.p. α_s, else uniform.
* UDLM tau-leap (``reverse_rate``): jumps to y ≠ x at rate (σ'/V) x̄_y / x̄_x, x̄ = V α p0 + 1 − α;
  leave w.p. min(1, dt σ'/V (V − x̄_x)/x̄_x), then y ≠ x ∝ x̄_y: from p0 without x w.p.
  V α (1 − p0(x)) / (V α (1 − p0(x)) + (1 − α)(V − 1)), else uniform over the V − 1 others.
* SEDD-uniform tau-leap: rate (σ'/V) exp(l_y) to y ≠ x; leave w.p. min(1, dt σ'/V Σ_{y≠x} e^{l_y}),
  then y ≠ x ∝ e^{l_y}.

All schedule values are float64 (``survival``); the one number per position that decides whether it
moves uses the float64 sum of the row's exponentials (:func:`~textdiff.categorical.normaliser`), and
the draws over V use float64 weights. Temperature / top-k / top-p: ancestral filters p0 first
(``x0_filter``); Euler and analytic keep the probability of leaving x and draw the target y ≠ x from
the filtered target weights (``jump_filter``, the law of ``LogitFilter.transition``): only the rows
that jump pay for the filter.
"""
from __future__ import annotations

import torch

from ..categorical import Buffers, inverse_cdf, normaliser, row_chunks, shifted_weights
from .nucleus import filtered_weights, p0_bounds


def _rows(x_t):
    B, L = x_t.shape
    pos = torch.arange(B * L, device=x_t.device)
    return pos // L, pos % L


def _flat(logits):
    return logits.reshape(-1, logits.shape[-1])  # [B L, V], a view when contiguous


def _p0(rows):
    """softmax(rows) [n, V] in float64."""
    w = shifted_weights(rows)[0]
    return w / w.sum(-1, keepdim=True)


def _filtered_jumps(y, rows, x, leave, u, log_target, jump_filter):
    """``y`` [c] with the ``leave`` [c] positions moved to y' ≠ x drawn from
    softmax(jump_filter(log_target(rows[leave], leave))) ([n, V] float64 log target weights)."""
    if not bool(leave.any()):
        return y
    lt = log_target(rows[leave], leave).scatter(-1, x[leave][:, None], float("-inf"))  # y ≠ x
    y = y.clone()
    y[leave] = inverse_cdf(shifted_weights(jump_filter(lt))[0], u[leave])
    return y


def _uniform_other(u, x, V):
    """A uniform state other than x [n], from u [n]."""
    j = (u * (V - 1)).floor().long().clamp_max(V - 2)
    return j + (j >= x).long()


def udlm_posterior_step(process, logits, x_t, t, s, u, x0_filter=None, jump_filter=None, x0_top_k=None,
                        x0_nucleus=None):
    """x_s [B, L] ~ UDLM's p_θ(x_s | x_t) (module docstring); t, s [B]; u [B, L, 3] uniforms.

    ``x0_filter`` (ancestral's filters) replaces p0 by softmax(x0_filter(l)); ``jump_filter`` (Euler's
    last step) keeps P(y ≠ x) = c (1 − q(x)) / (α_{t|s} q(x) + c) and draws y ≠ x from
    softmax(jump_filter(log q(y))), the law of :meth:`~.filters.LogitFilter.transition`.
    ``x0_top_k`` = (k, T) is the top-k / temperature filter read sparsely: p0 lives on the k largest
    logits (found in their own dtype), so the row pays a selection, not a float64 pass over V
    (a chunk with a tie at the k-th logit, where the filter keeps more than k, takes ``x0_filter``).
    ``x0_nucleus`` = (T, top_p) is the temperature / top-p filter as float64 weights read straight
    from the rows, the nucleus cut (no sort) only on the rows whose step depends on more than bounds
    on p̃0(x) (:func:`_nucleus_p0`)."""
    V = process.vocab_size
    a_t, m_t = process.survival(t)
    a_s, m_s = process.survival(s)
    a_ts = a_t / a_s.clamp_min(1e-300)
    c = (m_t - m_s) / a_s.clamp_min(1e-300) / V  # (1 − α_{t|s}) / V
    bi, li = _rows(x_t)
    flat_x, flat_u = x_t.reshape(-1), u.reshape(-1, 3)
    out = flat_x.clone()
    flat_l = _flat(logits)
    bufs = Buffers()
    for sl in row_chunks(bi.shape[0], V):
        b, x, uu = bi[sl], flat_x[sl], flat_u[sl]
        rows = process.x0_logits_rows(flat_l[sl])  # [c, V]

        def moves(p0_x, b=b, uu=uu):  # [c] bool: leave the stay component, given p0(x) [c]
            stay_w = a_ts[b] * (a_s[b] * p0_x + m_s[b] / V)
            return uu[:, 0] * (stay_w + c[b]) >= stay_w

        sparse = _top_k_p0(rows, x, x0_top_k) if x0_top_k is not None and x0_top_k[0] < V else None
        if sparse is not None:
            p0_x, draw_p0 = sparse
        elif x0_nucleus is not None and jump_filter is None:
            p0_x, draw_p0 = _nucleus_p0(rows, x, x0_nucleus, moves, uu[:, 1] < a_s[b], bufs)
        else:
            if x0_filter is not None:
                rows = x0_filter(rows)  # float64, −∞ outside the kept set
            mx, total = normaliser(rows, out=bufs.get("e", rows.shape, rows.dtype, rows.device))
            p0_x = torch.exp(rows.gather(-1, x[:, None])[:, 0].to(torch.float64) - mx) / total
            draw_p0 = lambda i, u_: inverse_cdf(shifted_weights(rows[i])[0], u_)  # noqa: E731
        if jump_filter is not None:
            q_x = a_s[b] * p0_x + m_s[b] / V
            leave = uu[:, 0] * (a_ts[b] * q_x + c[b]) < c[b] * (1 - q_x)  # P(y ≠ x)
            q = lambda r, i: torch.log(a_s[b][i][:, None] * _p0(r) + (m_s[b][i] / V)[:, None])  # noqa: E731
            out[sl] = _filtered_jumps(out[sl], rows, x, leave, uu[:, 2], q, jump_filter)
            continue
        move = moves(p0_x)  # leave the stay component
        from_p0 = move & (uu[:, 1] < a_s[b])
        y = out[sl].clone()
        if bool(from_p0.any()):
            y[from_p0] = draw_p0(from_p0, uu[from_p0, 2])
        flat = move & ~from_p0
        y[flat] = (uu[flat, 2] * V).floor().long().clamp_max(V - 1)
        out[sl] = y
    return out.view_as(x_t)


def _nucleus_p0(rows, x, nucleus, moves, may_draw, bufs):
    """(p0(x) [c], draw(i, u) -> tokens) for p0 = p̃0, softmax(rows / T) after top-p (``nucleus`` =
    (T, top_p)), read exactly only where it matters. Whether a position moves is monotone in p0(x)
    (``moves`` [c] -> [c] bool, fewer moves for larger p0(x)), so the bounds lo ≤ p̃0(x) ≤ hi of one
    pass per row (:func:`~.nucleus.p0_bounds`, no cut) decide every row whose decision is the same at
    lo and at hi, exactly as p̃0(x) would. The nucleus itself (:func:`~.nucleus.keep_nucleus`) is cut
    only on the other rows and on those that may draw from p̃0 (moving, with ``may_draw`` [c]);
    the returned p0(x) is exact there and lo elsewhere (the same decisions)."""
    temperature, top_p = nucleus
    lo, hi = p0_bounds(rows, x, temperature, top_p, bufs)
    least, most = moves(hi), moves(lo)  # the moves at the largest / smallest p0(x): least ⊆ most
    exact = ((least != most) | (most & may_draw)).nonzero()[:, 0]  # [k] rows that need p̃0 itself
    p0_x = lo.clone()
    kept = None
    if exact.numel():
        f = filtered_weights(rows.index_select(0, exact), temperature, top_p, bufs)  # [k, V] float64
        kept = f.w
        p0_x[exact] = kept.gather(-1, x[exact][:, None])[:, 0] / f.total
    at = torch.full_like(x, -1).index_copy_(0, exact, torch.arange(exact.numel(), device=x.device))

    def draw(i, u):  # i [c] bool, within ``exact``
        return inverse_cdf(kept[at[i]], u)

    return p0_x, draw


def _top_k_p0(rows, x, top_k):
    """(p0(x) [c] float64, draw(i, u) -> tokens) for p0 = softmax(top-k(rows) / T), read from the k
    kept logits alone; None on a tie at the k-th logit (the dense filter then keeps more than k)."""
    k, temperature = top_k
    vals, idx = torch.topk(rows, k + 1, dim=-1)  # [c, k + 1], descending
    if bool((vals[:, k] == vals[:, k - 1]).any()):
        return None
    lg = vals[:, :k].to(torch.float64) / temperature  # [c, k] the kept logits
    e = torch.exp(lg - lg[:, :1])  # the first is the largest
    idx, order = idx[:, :k].sort(-1)  # vocabulary order: the dense kernel's inverse CDF, entry for entry
    e = e.gather(-1, order)
    p0_x = (e * (idx == x[:, None])).sum(-1) / e.sum(-1)

    def draw(i, u):
        return idx[i].gather(-1, inverse_cdf(e[i], u)[:, None])[:, 0]

    return p0_x, draw


def udlm_tau_leap_step(process, logits, x_t, t, s, u, jump_filter=None):
    """x_s [B, L] by one tau-leap on UDLM's reverse rates (module docstring); with ``jump_filter``
    the targets y ≠ x are drawn from softmax(jump_filter(log x̄_y)) (:meth:`~.filters.LogitFilter.transition`)."""
    V = process.vocab_size
    a, m = process.survival(t)
    rate = process.schedule.dsigma(t.to(torch.float64)).to(torch.float64) / V * (t - s)  # dt σ'/V [B]
    bi, li = _rows(x_t)
    flat_x, flat_u = x_t.reshape(-1), u.reshape(-1, 3)
    out = flat_x.clone()
    flat_l = _flat(logits)
    bufs = Buffers()
    for sl in row_chunks(bi.shape[0], V):
        b, x, uu = bi[sl], flat_x[sl], flat_u[sl]
        rows = process.x0_logits_rows(flat_l[sl])  # [c, V]
        mx, total = normaliser(rows, out=bufs.get("e", rows.shape, rows.dtype, rows.device))
        p0_x = torch.exp(rows.gather(-1, x[:, None])[:, 0].to(torch.float64) - mx) / total
        xb_x = V * a[b] * p0_x + m[b]
        leave = uu[:, 0] < (rate[b] * (V - xb_x) / xb_x).clamp_max(1.0)
        if jump_filter is not None:
            xbar = lambda r, i: torch.log(V * a[b][i][:, None] * _p0(r) + m[b][i][:, None])  # noqa: E731
            out[sl] = _filtered_jumps(out[sl], rows, x, leave, uu[:, 2], xbar, jump_filter)
            continue
        mass_p0 = V * a[b] * (1 - p0_x)
        from_p0 = leave & (uu[:, 1] * (mass_p0 + m[b] * (V - 1)) < mass_p0)
        y = out[sl].clone()
        if bool(from_p0.any()):
            wx = shifted_weights(rows[from_p0])[0].scatter(-1, x[from_p0][:, None], 0.0)
            y[from_p0] = inverse_cdf(wx, uu[from_p0, 2])
        flat = leave & ~from_p0
        y[flat] = _uniform_other(uu[flat, 2], x[flat], V)
        out[sl] = y
    return out.view_as(x_t)


def sedd_uniform_tau_leap_step(process, logits, x_t, t, s, u, jump_filter=None):
    """x_s [B, L] by one tau-leap on SEDD-uniform's rates (σ'/V) e^{l_y} (module docstring); with
    ``jump_filter`` the targets y ≠ x come from softmax(jump_filter(l_y))."""
    V = process.vocab_size
    rate = process.schedule.dsigma(t.to(torch.float64)).to(torch.float64) / V * (t - s)  # [B]
    bi, li = _rows(x_t)
    flat_x, flat_u = x_t.reshape(-1), u.reshape(-1, 3)
    out = flat_x.clone()
    flat_l = _flat(logits)
    bufs = Buffers()
    for sl in row_chunks(bi.shape[0], V):
        b, x, uu = bi[sl], flat_x[sl], flat_u[sl]
        rows = flat_l[sl]
        mx, total = normaliser(rows, out=bufs.get("e", rows.shape, rows.dtype, rows.device))
        here = torch.exp(rows.gather(-1, x[:, None])[:, 0].to(torch.float64) - mx)
        log_j = torch.log(rate[b]) + mx + torch.log((total - here).clamp_min(0.0))  # Σ_{y≠x} e^{l_y}
        leave = uu[:, 0] < torch.exp(log_j).clamp_max(1.0)
        if jump_filter is not None:
            out[sl] = _filtered_jumps(out[sl], rows, x, leave, uu[:, 2], lambda r, i: r.double(), jump_filter)
            continue
        if bool(leave.any()):
            y = out[sl].clone()
            w = shifted_weights(rows[leave])[0].scatter(-1, x[leave][:, None], 0.0)  # y ≠ x
            y[leave] = inverse_cdf(w, uu[leave, 2])
            out[sl] = y
    return out.view_as(x_t)


def sedd_uniform_analytic_step(process, logits, x_t, t, s, u, jump_filter=None):
    """x_s [B, L] by SEDD-uniform's Tweedie step (``analytic_probs``), row by row; with
    ``jump_filter`` the targets y ≠ x come from softmax(jump_filter(log max(0, s_y − k))).

    With τ = α_t/α_s, s_y = e^{l_y} (y ≠ x), s_x = 1, S = Σ_z s_z and k = (1 − τ) S / V, the step is
    p(y) ∝ max(0, s_y − k) (1 − τ)/V for y ≠ x and max(0, 1 − k) (τ + (1 − τ)/V) at y = x.
    """
    V = process.vocab_size
    a_t, _ = process.survival(t)
    a_s, _ = process.survival(s)
    tau = a_t / a_s.clamp_min(1e-300)  # [B]
    bi, li = _rows(x_t)
    flat_x, flat_u = x_t.reshape(-1), u.reshape(-1, 3)
    out = flat_x.clone()
    flat_l = _flat(logits)
    bufs = Buffers()
    for sl in row_chunks(bi.shape[0], V):
        b, x, uu = bi[sl], flat_x[sl], flat_u[sl]
        rows = flat_l[sl]  # [c, V]
        m = rows.amax(-1, keepdim=True)
        e = torch.sub(rows, m, out=bufs.get("e", rows.shape, rows.dtype, rows.device)).exp_()  # [c, V] e^{l − m}
        m64 = m[:, 0].to(torch.float64)
        here = torch.exp(rows.gather(-1, x[:, None])[:, 0].to(torch.float64) - m64)
        big = torch.exp(m64)
        S = big * (e.sum(-1).to(torch.float64) - here) + 1.0
        k = (1 - tau[b]) * S / V  # [c]
        kk = (k / big).to(e.dtype)[:, None]
        over = torch.sub(e, kk, out=e).clamp_min_(0.0).scatter_(-1, x[:, None], 0.0).sum(-1).to(torch.float64) * big
        jump = (1 - tau[b]) / V * over
        stay = (1 - k).clamp_min(0.0) * (tau[b] + (1 - tau[b]) / V)
        leave = uu[:, 0] * (stay + jump) >= stay
        leave &= jump > 0
        if jump_filter is not None:
            over_k = lambda r, i: torch.log((shifted_weights(r)[0] - (k / big)[i][:, None]).clamp_min_(0.0))  # noqa: E731
            out[sl] = _filtered_jumps(out[sl], rows, x, leave, uu[:, 2], over_k, jump_filter)
            continue
        if bool(leave.any()):
            w = (shifted_weights(rows[leave])[0] - (k / big)[leave][:, None]).clamp_min_(0.0)
            w = w.scatter_(-1, x[leave][:, None], 0.0)
            y = out[sl].clone()
            y[leave] = inverse_cdf(w, uu[leave, 2])
            out[sl] = y
    return out.view_as(x_t)
