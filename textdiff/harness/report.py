"""The human-readable half of a report: Markdown tables and PNG plots (matplotlib, Agg backend)."""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def _f(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _ci(pair, nd=2):
    return f"[{_f(pair[0], nd)}, {_f(pair[1], nd)}]" if pair else "–"


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"# Evaluation report: {report['suite']}", ""]
    if report.get("notes"):
        lines += [report["notes"].strip(), ""]
    git = report.get("git") or {}
    lines += [
        f"- command: `{report['command']}`",
        f"- created: {report['created_utc']}; textdiff {report['textdiff_version']}; git {git.get('commit') or 'n/a'}"
        + (" (with local changes)" if git.get("dirty") else ""),
        f"- seed {report['protocol']['seed']}, precision {report['protocol']['precision']}, device "
        f"{report['protocol']['device']}, torch {report['environment']['torch']}, threads {report['environment']['threads']}",
        f"- caps for this run: {report['protocol']['caps']}",
        f"- sampling: {report['protocol']['sampling']}",
        "",
        "## Models",
        "",
        "| label | path | process | default sampler | context | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        proc = m["process"]
        sched = proc.get("schedule") or {}
        lines.append(f"| {m['label']} | `{m['path']}` | {proc['name']} ({sched.get('name', '')}, t-cond {proc.get('time_conditioning')}) "
                     f"| {m['default_sampler']['name']} | {m['seq_len']} | {m['parameters']:,} |")
    res = report["results"]
    lik = [r for r in res if r["metric"] == "likelihood"]
    if lik:
        lines += ["", "## Likelihood", "",
                  "NELBO in nats per token (an upper bound on the NLL; `exact` rows are AR models' exact NLL). "
                  "`MC CI`: Monte-Carlo error with the rows fixed; `bootstrap CI`: resampling rows (quote this one).", "",
                  "| model | task | dataset (detok) | layout | L | rows | tokens | estimator | t samples | NELBO | MC CI | bootstrap CI | PPL (bound) | PPL CI | BPC |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lik:
            d = r["dataset"]
            lines.append(f"| {r['model']} | {r['task']} | `{d['path']}` ({d['detokenizer']}) | {r['layout']} | {r['seq_len']} | {r['rows']} "
                         f"| {r['tokens']:,} | {r['estimator']} | {r['t_samples']} ({r['t_sampling']}) | {_f(r['nelbo'], 3)} "
                         f"| {_ci(r['mc_ci'], 3)} | {_ci(r['bootstrap_ci'], 3)} | {_f(r['ppl_bound'])} | {_ci(r['ppl_ci'])} "
                         f"| {_f(r['bits_per_char'], 3)} |")
        protos = {(r["task"], r["dataset"].get("protocol", "")) for r in lik if r["dataset"].get("protocol")}
        if protos:
            lines += ["", "Protocols:", ""] + [f"- **{t}**: {p.strip()}" for t, p in sorted(protos)]
    cond = [r for r in res if r["metric"] == "conditional"]
    if cond:
        lines += ["", "## Conditional likelihood (prompt → answer)", "",
                  "| model | task | examples | estimator | MC samples | NLL / example [CI] | NLL / answer token | answer PPL (bound) | greedy accuracy |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in cond:
            lines.append(f"| {r['model']} | {r['task']} | {r['examples']} | {r['estimator']} | {r['mc_samples']} "
                         f"| {_f(r['nll_per_example'], 3)} {_ci(r['nll_per_example_ci'], 3)} | {_f(r['nll_per_answer_token'], 3)} "
                         f"| {_f(r['answer_ppl_bound'])} | {_f(r['greedy_accuracy'], 3)} |")
    gen = [r for r in res if r["metric"] == "generation"]
    if gen:
        lines += ["", "## Generation", ""]
        protos = {json.dumps(r["gen_ppl"]["protocol"], sort_keys=True) for r in gen if "gen_ppl" in r}
        for p in protos:
            p = json.loads(p)
            ref = p["reference"]
            lines += [f"- reference LM: `{ref['name']}` ({ref['kind']}, context {ref['max_length']}); {p.get('note', '')}",
                      f"- retokenized: {p['retokenized']}; EOS policy: {p['eos_policy']}; prefix: {p['prefix']}; stride {p['stride']}",
                      f"- aggregation: {p['aggregation']}"]
        lines += ["", "| model | task | sampler | steps | samples | gen PPL [CI] | per-sample mean / median | entropy mean ± std (min) | distinct-2 | rep-4 | tokens/s | NFE | latency / batch (s) | batch | device |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in gen:
            g, d, s = r.get("gen_ppl", {}), r.get("diversity", {}), r["speed"]
            lines.append(
                f"| {r['model']} | {r['task']} | {r['sampler']['name']} | {r['steps']} | {r['num_samples']} "
                f"| {_f(g.get('gen_ppl'))} {_ci(g.get('gen_ppl_ci'))} | {_f(g.get('gen_ppl_per_sample_mean'))} / {_f(g.get('gen_ppl_per_sample_median'))} "
                f"| {_f(d.get('entropy_mean'), 3)} ± {_f(d.get('entropy_std'), 3)} ({_f(d.get('entropy_min'), 2)}) | {_f(d.get('distinct_2'), 3)} "
                f"| {_f(d.get('rep_4'), 3)} | {_f(s['tokens_per_s'], 1)} | {_f(s['nfe'], 1)} | {_f(s['latency_s'], 3)} | {s['batch_size']} "
                f"| {s['device']} ({s['device_name']}, {s['threads']} thr) |")
        mv = [r for r in gen if "mauve" in r]
        if mv:
            lines += ["", "| model | steps | MAUVE mean ± std | seeds |", "|---|---|---|---|"]
            lines += [f"| {r['model']} | {r['steps']} | {_f(r['mauve']['mauve_mean'], 3)} ± {_f(r['mauve']['mauve_std'], 3)} "
                      f"| {r['mauve']['seeds']} |" for r in mv]
        lines += ["", "### Samples", ""]
        for r in gen:
            for i, text in enumerate(r.get("samples", [])):
                lines += [f"**{r['model']}, {r['steps']} steps, sample {i}:**", "", "```", text.strip()[:600], "```", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _scale(ax, which: str, values, label: str, ticks=None) -> None:
    """A readable axis: log only when the values span more than a decade, plain numbers (no 10^x),
    no minor-tick labels (they overlap), and ``ticks`` (e.g. the step counts) when given."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    values = [v for v in values if v is not None and v > 0]
    axis = ax.xaxis if which == "x" else ax.yaxis
    log = bool(values) and max(values) / min(values) > 10
    (ax.set_xscale if which == "x" else ax.set_yscale)("log" if log else "linear")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 10 else f"{v:.3g}")
    if ticks is not None:
        def gap(a, b):
            return math.log(b / a) if log else b - a

        ordered = sorted(set(ticks))
        span = gap(ordered[0], ordered[-1]) or 1.0
        kept = []
        for v in reversed(ordered):  # drop a tick too close to the next one (127 beside 128)
            if not kept or gap(v, kept[-1]) > 0.05 * span:
                kept.append(v)
        axis.set_ticks(sorted(kept))
    elif log:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        axis.set_major_locator(MaxNLocator(nbins=6))
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(NullFormatter())
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(label)


def write_plots(report: dict, out: Path) -> list[Path]:
    """Gen PPL and entropy against steps, and gen PPL against tokens/s (the panels with data only)."""
    gen = [r for r in report["results"] if r["metric"] == "generation"]
    if not gen:
        return []
    from ..extras import installed, skip_note

    if not installed("matplotlib"):  # the report's JSON and Markdown are complete without it
        print(skip_note("the report's plots", "matplotlib", "eval"), file=sys.stderr)
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = defaultdict(list)
    for r in gen:
        series[(r["model"], r["task"])].append(r)
    for key in series:
        series[key].sort(key=lambda r: r["steps"])
    has_ppl = any("gen_ppl" in r for r in gen)
    has_div = any("diversity" in r for r in gen)
    panels = [p for p, on in (("ppl", has_ppl), ("div", has_div)) if on]
    if not panels:
        return []
    written = []
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    axes = list(axes[0])
    steps_all = [r["steps"] for r in gen]
    for ax, panel in zip(axes, panels):
        ys = []
        for (model, task), rs in series.items():
            rs = [r for r in rs if ("gen_ppl" if panel == "ppl" else "diversity") in r]
            if not rs:
                continue
            steps = [r["steps"] for r in rs]
            if panel == "ppl":
                y = [r["gen_ppl"]["gen_ppl"] for r in rs]
                err = [[v - r["gen_ppl"]["gen_ppl_ci"][0] for v, r in zip(y, rs)],
                       [r["gen_ppl"]["gen_ppl_ci"][1] - v for v, r in zip(y, rs)]]
                ys += [r["gen_ppl"]["gen_ppl_ci"][0] for r in rs] + [r["gen_ppl"]["gen_ppl_ci"][1] for r in rs]
            else:
                y = [r["diversity"]["entropy_mean"] for r in rs]
                err = [r["diversity"]["entropy_std"] for r in rs]
                ys += [a - b for a, b in zip(y, err)] + [a + b for a, b in zip(y, err)]
            ax.errorbar(steps, y, yerr=err, marker="o", capsize=3, label=f"{model} / {task}")
        _scale(ax, "x", steps_all, "sampling steps (NFE budget)", ticks=steps_all)
        if panel == "ppl":
            _scale(ax, "y", ys, "generative perplexity (95% CI)")
            ax.set_title("Generative perplexity vs steps (lower is better)")
        else:
            _scale(ax, "y", [abs(v) + 1e-9 for v in ys], "unigram entropy per sample (nats, ± 1 sd)")
            ax.set_title("Sample entropy vs steps")
    written.append(_save_figure(plt, fig, axes, out / "genppl_entropy_vs_steps.png"))

    if has_ppl:
        fig, ax = plt.subplots(figsize=(6, 4.4))
        xs_all, ys_all = [], []
        for (model, task), rs in series.items():
            rs = [r for r in rs if "gen_ppl" in r]
            if not rs:
                continue
            xs = [r["speed"]["tokens_per_s"] for r in rs]
            ys = [r["gen_ppl"]["gen_ppl"] for r in rs]
            xs_all += xs
            ys_all += ys
            ax.plot(xs, ys, marker="o", label=f"{model} / {task}")
            for x, y, r in zip(xs, ys, rs):
                ax.annotate(str(r["steps"]), (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
        _scale(ax, "x", xs_all, "decoded tokens / s (point labels: sampling steps)")
        _scale(ax, "y", ys_all, "generative perplexity (lower is better)")
        ax.set_title("Quality vs speed")
        ax.margins(x=0.12, y=0.12)
        written.append(_save_figure(plt, fig, [ax], out / "quality_vs_speed.png"))
    return written


def render(report_json) -> None:
    """Re-write report.md and the plots beside an existing report.json."""
    path = Path(report_json)
    report = json.loads(path.read_text())
    write_markdown(report, path.parent / "report.md")
    write_plots(report, path.parent)


if __name__ == "__main__":  # python -m textdiff.harness.report path/to/report.json
    import sys

    render(sys.argv[1])


def _save_figure(plt, fig, axes, path):
    """Grid and legend on every axis, then write ``path`` (PNG) and close the figure."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
