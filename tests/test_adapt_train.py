"""Adaptation of a causal LM through ``textdiff train`` (issue 26, phase 2).

A tiny random transformers causal LM (Qwen3 / Qwen2 / Llama config, saved with its tokenizer to a
temporary folder) is the ``train.init_from``; an ``adapt:`` section turns it into the denoiser of the
masked or block process (:mod:`textdiff.adapt.training`, :mod:`textdiff.models.adapted`).
"""
import pytest
import torch

from textdiff.config import load_recipe
from textdiff.errors import ConfigError, IncompatibleError

TEXTS = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
         "class Stack:\n    def push(self, item):\n        self.items.append(item)\n"] * 20


def make_tokenizer():
    """A small byte-level BPE with EOS and PAD but no mask token (an AR tokenizer: [MASK] is added)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>", "<pad>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def make_causal_lm(folder, family="qwen3", seed=0):
    """A tiny random causal LM of ``family`` with its tokenizer, saved by transformers to ``folder``."""
    import transformers

    tok = make_tokenizer()
    shape = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=family != "llama")
    config_cls, model_cls = {"qwen3": ("Qwen3Config", "Qwen3ForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
                             "llama": ("LlamaConfig", "LlamaForCausalLM")}[family]
    if family == "qwen3":
        shape["head_dim"] = 8
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**shape))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return make_causal_lm(tmp_path_factory.mktemp("qwen3"), "qwen3")


def adapt_recipe(tmp_path, init_from, target="masked", block_size=None, **adapt):
    raw = {
        "name": "adapt", "output_dir": str(tmp_path / "run"),
        "tokenizer": {"path": str(init_from)},
        "data": {"source": "embedded", "seq_len": 16, "max_documents": 30, "val_fraction": 0.1},
        "process": {"name": target, "time_conditioning": False, **({"block_size": block_size} if block_size else {})},
        "sampler": {"name": "ancestral"},
        "train": {"init_from": str(init_from), "max_steps": 2, "batch_size": 4, "lr": 1e-3, "warmup_steps": 0,
                  "eval_every": 2, "eval_batches": 1, "save_every": 2, "log_every": 1, "trackers": [], "seed": 0,
                  "mixed_precision": "no"},
        "adapt": {"target": target, **({"block_size": block_size} if block_size else {}), **adapt},
    }
    return raw


def built(tmp_path, init_from, target="masked", block_size=None, **adapt):
    """(run, recipe) of prepare_run: tokenizer, process and the adapted model at step 0."""
    from textdiff.training.setup import prepare_run

    recipe = load_recipe(raw=adapt_recipe(tmp_path, init_from, target, block_size, **adapt))
    (tmp_path / "run").mkdir(exist_ok=True)
    return prepare_run(recipe)


def ar_next_token_nll(folder, x0):
    from transformers import AutoModelForCausalLM

    ar = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = ar(x0).logits.double()
    return -torch.log_softmax(logits, -1)[:, :-1].gather(-1, x0[:, 1:, None])[..., 0]  # [B, L - 1]


@pytest.mark.parametrize("target, block_size", [("masked", None), ("block", 4)])
def test_step0_with_causal_mask_and_shift_is_the_ar_model(tmp_path, qwen3, target, block_size):
    """At adaptation step 0 (anneal_steps > 0: causal attention) with the shift, on clean rows, the
    adapted model's next-token loss is the AR model's, token by token."""
    run = built(tmp_path, qwen3, target, block_size, anneal_steps=10)
    model, process = run.model.eval(), run.process
    x0 = torch.as_tensor(run.train_rows[:3]["input_ids"])  # [3, 16]
    inputs = process.model_inputs(x0, x0, torch.zeros(3))  # clean x_t; block: [x0 ; x0] with its 4-D mask
    with torch.no_grad():
        logits = process.model_logits(model(**inputs).logits, x0).double()  # [3, 16, V + 1]
    logits[..., process.mask_id] = float("-inf")  # SUBS
    nll = -torch.log_softmax(logits, -1)[:, 1:].gather(-1, x0[:, 1:, None])[..., 0]
    torch.testing.assert_close(nll, ar_next_token_nll(qwen3, x0), rtol=0, atol=1e-5)
    assert run.model.config.vocab_size == len(run.tokenizer) == run.tokenizer.mask_token_id + 1  # [MASK] row added
    model.progress = 1.0  # the end of annealing is not the AR model any more
    with torch.no_grad():
        late = process.model_logits(model(**inputs).logits, x0)
    assert not torch.allclose(late.double()[:, 1:], logits[:, 1:].clamp_min(-1e30), atol=1e-3)


def test_recipe_rules(tmp_path, qwen3):
    raw = adapt_recipe(tmp_path, qwen3)
    raw["train"].pop("init_from")
    with pytest.raises(ConfigError, match="set train.init_from"):
        load_recipe(raw=raw)
    raw = adapt_recipe(tmp_path, qwen3, "block", 4)
    raw["process"]["name"] = "masked"
    raw["process"].pop("block_size")
    with pytest.raises(IncompatibleError, match="set process.name=block"):
        load_recipe(raw=raw)
    raw = adapt_recipe(tmp_path, qwen3, "block", 4)
    raw["process"]["block_size"] = 8
    with pytest.raises(IncompatibleError, match="must be equal"):
        load_recipe(raw=raw)


def test_sliding_window_shorter_than_the_row_is_refused_in_one_line(tmp_path):
    folder = make_causal_lm(tmp_path / "flash", "qwen2")
    import json

    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(sliding_window=4, use_sliding_window=True, max_window_layers=0, layer_types=None)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleError, match="sliding-window"):
        built(tmp_path, folder)


def decode(lm, prompts, cache, block_size=None, steps=8, seed=3):
    from textdiff.generation import generate

    out = generate(lm.model, lm.process, lm.make_sampler(), prompts, max_new_tokens=8, steps=steps, block_size=block_size,
                   use_cache=cache, seed=seed)
    return out.sequences


@pytest.mark.slow
def test_block_target_trains_loads_and_decodes_with_an_exact_cache(tmp_path, qwen3):
    """textdiff train (2 steps, complementary masks, a block-size schedule) -> a folder that loads
    natively, scores, and decodes with the exact KV cache token for token as without a cache."""
    from textdiff.lm import DiffusionLM
    from textdiff.training.loop import train

    raw = adapt_recipe(tmp_path, qwen3, "block", 4, anneal_steps=1, complementary_masks=True,
                       block_schedule=[{"steps": 1, "block_size": 16}])
    final = train(load_recipe(raw=raw))
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    assert type(lm.model).__name__ == "AdaptedLM" and lm.model.config.attention == "block_causal"
    assert lm.model.block_size == 4 and lm.model.progress == 1.0 and lm.process.block_size == 4
    ids = lm.tokenizer("def add(a, b):")["input_ids"]
    prompts = [ids, ids[:3]]  # left padding in the batch
    cached = decode(lm, prompts, "exact", block_size=4)
    plain = decode(lm, prompts, "none", block_size=4)
    assert torch.equal(cached, plain) and cached.shape == (2, len(ids) + 8)
    scores = lm.score(["def add(a, b):"], t_samples=2)
    assert len(scores) == 1 and scores[0] > 0


def test_cached_logits_equal_uncached_logits(tmp_path, qwen3):
    """The exact cache through the contexts: every window's logits equal the full-row ones (block
    target, shift on: a window's first token reads the committed row before it from the cache)."""
    from textdiff.contexts import BlockCache, FullContext
    from textdiff.models.cache import KVCache

    run = built(tmp_path, qwen3, "block", 4)
    model = run.model.eval()
    B, T = 2, 12
    x = torch.as_tensor(run.train_rows[:B]["input_ids"])[:, :T]
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, :2] = False  # left padding of the second row
    positions = torch.arange(T)[None].expand(B, T) * valid  # block-aligned, as generate() places rows
    call = lambda ids, t, m, p, c, u, logits_to_keep=0: model(ids, t, m, p, c, u, logits_to_keep=logits_to_keep).logits  # noqa: E731
    cached = BlockCache(call, valid, positions, KVCache.for_model(model))
    full = FullContext(call, valid, positions)
    t = torch.full((B,), 0.5)
    with torch.no_grad():
        for lo in (4, 8):
            noisy = x.clone()
            noisy[:, lo:] = run.process.mask_id
            a, b = cached.logits(noisy, lo, lo + 4, t), full.logits(noisy, lo, lo + 4, t)
            torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_masked_target_trains_loads_decodes_scores_and_converts(tmp_path, qwen3):
    """textdiff train (2 steps of annealing) -> a folder that loads natively, decodes (no cache: the
    target is bidirectional; an exact cache is refused in one line), scores, and converts with the CLI
    to a copy whose network is unchanged (a transformers Qwen3 folder)."""
    from transformers import AutoModelForCausalLM

    from textdiff.cli import main
    from textdiff.lm import DiffusionLM
    from textdiff.training.loop import train

    final = train(load_recipe(raw=adapt_recipe(tmp_path, qwen3, anneal_steps=4)))
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    assert lm.model.config.attention == "bidirectional" and lm.model.progress == 0.25  # saved mid-anneal (steps 0, 1)
    ids = lm.tokenizer("def add(a, b):")["input_ids"]
    assert decode(lm, [ids], "none").shape == (1, len(ids) + 8)
    with pytest.raises(IncompatibleError, match="block-causal or causal"):
        decode(lm, [ids], "exact", block_size=4)
    assert lm.score(["def add(a, b):"], t_samples=2)[0] > 0
    main(["convert", str(final), str(tmp_path / "copy")])
    copy = DiffusionLM.from_pretrained(tmp_path / "copy", device="cpu")
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(copy.model(x).logits, lm.model(x).logits, rtol=0, atol=0)
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "copy")).__name__ == "Qwen3ForCausalLM"


def test_block_schedule_sets_the_block_size_by_step_and_leaves_the_recipe_alone(tmp_path, qwen3):
    run = built(tmp_path, qwen3, "block", 4, block_schedule=[{"steps": 2, "block_size": 1}, {"steps": 1, "block_size": 8}])
    hooks, model, process = run.hooks, run.model, run.process
    sizes = []
    for step in range(5):
        hooks.before_step(step, model, process)
        sizes.append((model.block_size, process.block_size))
    assert sizes == [(1, 1), (1, 1), (8, 8), (4, 4), (4, 4)]
    assert run.recipe.process.block_size == 4  # the saved recipe still names the target


def test_complementary_masks_run_each_row_with_its_mask_and_the_complement(tmp_path, qwen3):
    run = built(tmp_path, qwen3, "block", 4, complementary_masks=True)
    seen = []

    def spy(**inputs):
        seen.append(inputs["input_ids"])
        return run.model(**inputs)

    x0 = torch.as_tensor(run.train_rows[:3]["input_ids"])  # [3, 16]
    t = run.process.sample_t(3, seq_len=16, generator=torch.Generator().manual_seed(0))
    terms = run.hooks.nelbo_terms(spy, run.process, x0, t=t, generator=torch.Generator().manual_seed(1))
    ids = seen[0]  # [6, 32]: [x_t ; x0] for the rows, then for their complements
    masked = ids[:, :16] == run.process.mask_id
    assert ids.shape == (6, 32) and torch.equal(masked[:3], ~masked[3:])  # every token in exactly one of the two
    assert torch.equal(ids[:3, :16], terms.x_t) and torch.isfinite(terms.loss).all() and terms.loss.sum() > 0
