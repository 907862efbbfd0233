"""Supervised fine-tuning: row layout and EOS policies, frozen prompts, per-sequence normalisation,
condition dropout, one-line errors for bad rows, and a model that answers through generate()."""
import json
from pathlib import Path

import pytest
import torch

from textdiff.config import SFTConfig, load_recipe
from textdiff.errors import ConfigError, DataError
from textdiff.lm import DiffusionLM
from textdiff.objective import nelbo_terms
from textdiff import build_process
from textdiff.sft import (WORDS, PromptDropout, build_rows, dropped_rows, load_examples, row_weights, split_example,
                          synthetic_examples, with_prompt_dropout)
from textdiff.tokenization import train_bpe, wrap_fast
from textdiff.training.loop import train

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("sft-*.yaml"))


@pytest.fixture(scope="module")
def tok():
    texts = [f"{e['prompt']}{e['response']}" for e in synthetic_examples(["add", "copy", "reverse"], 300, 0)]
    return wrap_fast(train_bpe(texts, vocab_size=320))


def test_rows_hold_prompt_response_and_eos_padding_with_the_policy_weights(tok):
    ex = [{"prompt": "Copy: apple river\n", "response": "apple river"}]
    L = 24
    p = tok(ex[0]["prompt"], add_special_tokens=False)["input_ids"]
    r = tok(ex[0]["response"], add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    weights = {}
    for policy in ("first", "all", "weighted"):
        rows = build_rows(ex, tok, L, SFTConfig(eos_policy=policy, pad_eos_weight=0.25))
        ids, w, prompt = rows[0]["input_ids"].tolist(), rows[0]["loss_mask"], rows[0]["prompt_mask"]
        assert ids == p + r + [eos] * (L - len(p) - len(r))  # EOS ends the response and pads the row
        assert prompt.tolist() == [1] * len(p) + [0] * (L - len(p))
        assert float(w.sum()) == pytest.approx(1.0)  # per-sequence normalisation: the weights sum to one
        assert float(w[: len(p)].abs().sum()) == 0.0  # the prompt carries no loss
        weights[policy] = w
    n = len(r) + 1  # the response and its EOS
    first = weights["first"]
    assert torch.allclose(first[len(p): len(p) + n], torch.full((n,), 1.0 / n))
    assert float(first[len(p) + n:].abs().sum()) == 0.0  # later EOS pads teach nothing
    assert torch.allclose(weights["all"][len(p):], torch.full((L - len(p),), 1.0 / (L - len(p))))  # LLaDA
    pads = L - len(p) - n
    assert float(weights["weighted"][len(p)]) == pytest.approx(1.0 / (n + 0.25 * pads))
    assert float(weights["weighted"][-1]) == pytest.approx(0.25 / (n + 0.25 * pads))


def test_loop_normalisation_is_the_mean_over_rows_of_the_per_response_mean():
    w = torch.tensor([row_weights(2, 3, 10, "first", 0.0), row_weights(5, 1, 10, "first", 0.0)])
    nll = torch.rand(2, 10)
    loop_loss = (nll * w).sum() / w.sum()  # what training/loop.py computes with loss_mask = w
    per_row = [nll[0, 2:6].mean(), nll[1, 5:7].mean()]
    assert float(loop_loss) == pytest.approx(float(sum(per_row) / 2), rel=1e-6)


def test_the_prompt_is_never_corrupted_and_scores_nothing(tok):
    ex = synthetic_examples(["add", "reverse"], 8, 3)
    rows = build_rows(ex, tok, 48, SFTConfig())
    assert len(rows) == 8
    x0, mask, prompt = rows[:]["input_ids"], rows[:]["loss_mask"], rows[:]["prompt_mask"].bool()
    process = build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id)
    V = len(tok)
    model = lambda input_ids, **kw: type("O", (), {"logits": torch.randn(*input_ids.shape, V)})()  # noqa: E731
    terms = nelbo_terms(model, process, x0, loss_mask=mask, t=torch.full((8,), 0.999), frozen=prompt,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(terms.x_t[prompt], x0[prompt])
    assert bool((terms.x_t[~prompt] == tok.mask_token_id).float().mean() > 0.95)
    assert float(terms.loss[prompt].abs().sum()) == 0.0 and float(terms.loss[~prompt].sum()) > 0


def test_synthetic_tasks_are_deterministic_and_correct():
    tasks = ["add", "copy", "reverse", "count", "next"]
    a = synthetic_examples(tasks, 50, 7)
    assert a == synthetic_examples(tasks, 50, 7) != synthetic_examples(tasks, 50, 8)
    for e in a:
        kind, _, rest = e["prompt"][:-1].partition(": ") if ": " in e["prompt"] else ("add", "", e["prompt"])
        if kind == "add":
            x, y = e["prompt"][8:-2].split(" + ")
            assert int(e["response"]) == int(x) + int(y)
        elif kind == "Copy":
            assert e["response"] == rest
        elif kind == "Reverse":
            assert e["response"].split() == rest.split()[::-1]
        elif kind == "Count":
            assert int(e["response"]) == len(rest.split())
        else:
            assert WORDS.index(e["response"]) == (WORDS.index(rest) + 1) % len(WORDS)
    with pytest.raises(ConfigError, match="not known"):
        synthetic_examples(["sing"], 3, 0)


def test_bad_rows_and_missing_chat_template_raise_one_line_errors(tok, tmp_path):
    cfg = SFTConfig()
    for row, match in (({"prompt": "Hi", "_where": "x.jsonl:3"}, "x.jsonl:3: the row has no 'response'"),
                       ({"prompt": "Hi", "response": "  "}, "no 'response'"),
                       ({"text": "Hi"}, "no 'prompt' or 'messages'"),
                       ({"messages": [{"role": "user", "content": "Hi"}]}, "must be the assistant's response")):
        with pytest.raises(DataError, match=match) as e:
            split_example(row, tok, cfg)
        assert "\n" not in str(e.value)
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert not getattr(tok, "chat_template", None)
    with pytest.raises(ConfigError, match="no chat template") as e:
        split_example(chat, tok, cfg)
    assert "\n" not in str(e.value)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        assert split_example(chat, tok, cfg) == ("<user>Hi\n<assistant>", "Hello\n")  # the template's turn ending
    finally:
        tok.chat_template = None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n{oops\n")
    with pytest.raises(DataError, match="bad.jsonl:2: not valid JSON"):
        load_examples(SFTConfig(source=str(bad)))


def test_condition_dropout_depends_on_the_global_row_only_and_hides_only_prompts():
    assert torch.equal(dropped_rows(0, 2, 3, 0.5), dropped_rows(0, 0, 5, 0.5)[2:])  # any process split
    assert 0.4 < float(dropped_rows(1, 0, 1000, 0.5).float().mean()) < 0.6
    prompt = torch.tensor([[1, 1, 0, 0]] * 4, dtype=torch.bool)
    seen = []
    net = with_prompt_dropout(lambda input_ids, **kw: seen.append(input_ids), prompt, 0.5, 99, seed=1, start=0)
    assert isinstance(net, PromptDropout)
    x = torch.arange(16).reshape(4, 4)
    net(x)
    drop = dropped_rows(1, 0, 4, 0.5)
    assert torch.equal(seen[0][drop][:, :2], torch.full((int(drop.sum()), 2), 99))  # prompt -> [MASK]
    assert torch.equal(seen[0][~drop], x[~drop]) and torch.equal(seen[0][:, 2:], x[:, 2:])
    assert with_prompt_dropout("model", prompt, 0.0, 99, 1, 0) == "model"


@pytest.mark.slow
def test_an_sft_model_answers_prompts_through_generate(tiny, tmp_path):
    qa = {"colour of the sky": "blue", "colour of grass": "green", "colour of snow": "white", "colour of coal": "black"}
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {q}?\nA:", "response": f" {a}"}) + "\n" for q, a in list(qa.items()) * 16))
    raw = tiny(sft={"source": str(data), "val_fraction": 0.1}, data={"seq_len": 16},
               train={"max_steps": 200, "batch_size": 16, "eval_every": 200, "save_every": 200, "log_every": 50,
                      "cond_dropout": 0.1})
    final = train(load_recipe(raw=raw))
    lines = [json.loads(x) for x in (Path(raw["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [m for m in lines if "train_loss" in m][-1]["train_loss"] < 0.3
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    prompts = [f"Q: {q}?\nA:" for q in qa]
    texts = lm.generate(prompts, max_new_tokens=6, steps=6, seed=0)
    answers = [t[len(p):].strip() for p, t in zip(prompts, texts)]
    assert sum(a == qa[q] for a, q in zip(answers, qa)) >= 3, answers


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_sft_recipes_load_and_validate(path):
    recipe = load_recipe(path)
    assert recipe.sft is not None and recipe.sft.eos_policy in ("first", "all", "weighted")
    block = ("llada2", "sdar", "fast-dllm-v2")  # block diffusion: LLaDA 2.x, SDAR, Fast-dLLM v2
    expected = "uniform" if "diffusion-gemma" in path.stem else "block" if any(b in path.stem for b in block) else "masked"
    assert recipe.process.name == expected


def test_condition_dropout_without_sft_data_is_refused(tiny):
    with pytest.raises(ConfigError, match="needs an sft section") as e:
        train(load_recipe(raw=tiny(train={"cond_dropout": 0.1, "max_steps": 1})))
    assert "\n" not in str(e.value)


LLADA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                  "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("template, eot", [(LLADA_TEMPLATE, "<|eot_id|>"), (QWEN_TEMPLATE, "<|im_end|>")])
def test_chat_rows_end_the_answer_with_the_templates_eot_then_eos_padding(template, eot):
    """LLaDA's / Dream's SFT layout: [chat prompt | answer | EOT (| newline) | EOS ... EOS]; the
    prompt ends with the assistant header and is frozen; EOT is a counted response token."""
    texts = [f"{e['prompt']}{e['response']}" for e in synthetic_examples(["copy"], 100, 1)]
    tok = wrap_fast(train_bpe(texts, vocab_size=300))
    tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|im_end|>", "<|im_start|>", "<|start_header_id|>",
                                                          "<|end_header_id|>", "<|startoftext|>"]})
    tok.bos_token = "<|startoftext|>"
    tok.chat_template = template
    chat = {"messages": [{"role": "user", "content": "Copy: apple river"}, {"role": "assistant", "content": "apple river"}]}
    L = 40
    rows = build_rows([chat], tok, L, SFTConfig(eos_policy="first"))
    ids, prompt, w = rows[0]["input_ids"].tolist(), rows[0]["prompt_mask"].tolist(), rows[0]["loss_mask"]
    n_prompt = sum(prompt)
    answer = tok("apple river", add_special_tokens=False)["input_ids"]
    eot_id, eos = tok.convert_tokens_to_ids(eot), tok.eos_token_id
    assert eot_id != eos
    assert tok.decode(ids[:n_prompt]).endswith("assistant<|end_header_id|>\n\n" if eot == "<|eot_id|>" else "<|im_start|>assistant\n")
    after = ids[n_prompt:]
    assert after[:len(answer)] == answer and after[len(answer)] == eot_id  # the model learns to close its turn
    end = after.index(eos)
    assert tok.decode(after[len(answer) + 1:end]).strip() == ""  # at most the template's newline in between
    assert set(after[end:]) == {eos} and len(ids) == L  # EOS padding, as in LLaDA's SFT
    counted = [i for i, x in enumerate(w.tolist()) if x > 0]
    assert counted == list(range(n_prompt, n_prompt + end + 1))  # answer, EOT (and newline), the first EOS
