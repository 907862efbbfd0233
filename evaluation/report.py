"""The human-readable half of a report: Markdown tables and PNG plots (matplotlib, Agg backend)."""
from __future__ import annotations

import json
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
    path.write_text("\n".join(lines) + "\n")


def write_plots(report: dict, out: Path) -> list[Path]:
    gen = [r for r in report["results"] if r["metric"] == "generation"]
    if not gen:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = defaultdict(list)
    for r in gen:
        series[(r["model"], r["task"])].append(r)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (model, task), rs in series.items():
        rs = sorted(rs, key=lambda r: r["steps"])
        steps = [r["steps"] for r in rs]
        if all("gen_ppl" in r for r in rs):
            y = [r["gen_ppl"]["gen_ppl"] for r in rs]
            err = [[v - r["gen_ppl"]["gen_ppl_ci"][0] for v, r in zip(y, rs)], [r["gen_ppl"]["gen_ppl_ci"][1] - v for v, r in zip(y, rs)]]
            axes[0].errorbar(steps, y, yerr=err, marker="o", capsize=3, label=f"{model} / {task}")
        if all("diversity" in r for r in rs):
            axes[1].errorbar(steps, [r["diversity"]["entropy_mean"] for r in rs], yerr=[r["diversity"]["entropy_std"] for r in rs],
                             marker="o", capsize=3, label=f"{model} / {task}")
    axes[0].set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="generative perplexity (95% CI)", title="Gen PPL vs steps")
    axes[1].set(xscale="log", xlabel="sampling steps", ylabel="unigram entropy per sample (nats, ± 1 sd)", title="Entropy vs steps")
    written.append(_save_figure(plt, fig, axes, out / "genppl_entropy_vs_steps.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (model, task), rs in series.items():
        rs = [r for r in sorted(rs, key=lambda r: r["steps"]) if "gen_ppl" in r]
        if not rs:
            continue
        xs = [r["speed"]["tokens_per_s"] for r in rs]
        ys = [r["gen_ppl"]["gen_ppl"] for r in rs]
        ax.plot(xs, ys, marker="o", label=f"{model} / {task}")
        for x, y, r in zip(xs, ys, rs):
            ax.annotate(str(r["steps"]), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set(xscale="log", yscale="log", xlabel="tokens / s (labels: steps)", ylabel="generative perplexity (lower is better)",
           title="Quality vs speed")
    written.append(_save_figure(plt, fig, [ax], out / "quality_vs_speed.png"))
    return written





def render(report_json) -> None:
    """Re-write report.md and the plots beside an existing report.json."""
    path = Path(report_json)
    report = json.loads(path.read_text())
    write_markdown(report, path.parent / "report.md")
    write_plots(report, path.parent)


if __name__ == "__main__":  # python -m evaluation.report path/to/report.json
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
