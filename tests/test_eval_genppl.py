"""Generation-quality metrics on a tiny random GPT-2 built locally: generative perplexity of the
reference's own samples is its own perplexity; its exact PPL matches a direct computation (also
with the sliding window); diversity statistics have their known values; bad references fail cleanly."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from textdiff.categorical import sample_from_logits
from textdiff.errors import DataError, TextDiffError
from textdiff.eval.diversity import diversity, unigram_entropy
from textdiff.eval.gen_ppl import generative_perplexity, load_reference

V = 24  # words w0..w22 and <|endoftext|> (id 23)


def word_tokenizer(words, unk=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {"unk_token": unk} if unk else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", **kwargs)


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=V - 1, eos_token_id=V - 1)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(6.0)  # a peaked next-token law (entropy ~1.8 nats, log V = 3.2)
    tok = word_tokenizer([f"w{i}" for i in range(V - 1)] + ["<|endoftext|>"])
    return model, tok


def _sample(model, n, length, seed):
    """Ancestral samples from the reference (float64 Gumbel-max) and the entropy of each step's law."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1), V - 1)
    ent = torch.zeros(n, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(length):
            logp = torch.log_softmax(model(input_ids=x).logits[:, -1].double(), -1)
            ent += -(logp.exp() * logp).sum(-1)
            x = torch.cat([x, sample_from_logits(logp, g)[:, None]], 1)
    return x[:, 1:], ent / length


def test_gen_ppl_of_own_samples_is_own_perplexity(gpt2):
    model, tok = gpt2
    ids, ent = _sample(model, 256, 12, seed=0)
    texts = [tok.decode(row.tolist()) for row in ids]
    res = generative_perplexity((model, tok), texts, bootstrap=200)
    assert res["protocol"]["retokenized"] and res["tokens"] == 256 * 12 and res["empty_samples"] == 0
    own = float(ent.mean())  # E[NLL of own samples] = entropy rate
    assert own < math.log(V) - 0.5  # the law is far from uniform, so the check has teeth
    per_sample = np.log(res["per_sample_ppl"]) - ent.numpy()  # paired differences, mean 0
    se = per_sample.std(ddof=1) / math.sqrt(len(per_sample))
    assert abs(res["nll_per_token"] - own) < 4 * se + 1e-9
    _, ent_big = _sample(model, 1000, 12, seed=5)  # the model's own perplexity, precisely
    own_ppl = math.exp(float(ent_big.mean()))
    assert res["gen_ppl"] == pytest.approx(own_ppl, rel=0.08)
    assert res["gen_ppl_ci"][0] <= own_ppl <= res["gen_ppl_ci"][1]
    # uniformly random tokens look much worse to the same reference
    noise = torch.randint(0, V - 1, (96, 12), generator=torch.Generator().manual_seed(1))
    bad = generative_perplexity((model, tok), [tok.decode(r.tolist()) for r in noise], bootstrap=0)
    assert bad["gen_ppl"] > 2 * res["gen_ppl"]


def test_exact_ppl_matches_direct_computation_with_sliding_window(gpt2):
    model, tok = gpt2
    ids = torch.randint(0, V - 1, (3, 40), generator=torch.Generator().manual_seed(2))  # longer than n_positions=16
    ref = load_reference((model, tok))
    nlls = ref.nll(ids.tolist(), stride=6)
    for row, nll in zip(ids, nlls):
        full = [V - 1] + row.tolist()
        direct = []
        with torch.no_grad():
            for j in range(1, len(full)):
                begin = 0 if j < 16 else None
                if begin is None:  # the window that scores j: the first one of stride 6 that ends after j
                    k = 0
                    while not (k * 6 + 16 > j and (k == 0 or (k - 1) * 6 + 16 <= j)):
                        k += 1
                    begin = k * 6
                ctx = torch.tensor([full[begin:j]])
                logp = torch.log_softmax(model(input_ids=ctx).logits[0, -1].double(), -1)
                direct.append(-float(logp[full[j]]))
        assert np.allclose(nll, direct, atol=1e-5)
    # a short sequence fits in one window: the plain exact NLL
    short = ids[0, :10].tolist()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[V - 1] + short])).logits[0, :-1].double()
    want = -torch.log_softmax(logits, -1).gather(-1, torch.tensor(short)[:, None])[:, 0]
    assert np.allclose(ref.nll([short])[0], want.numpy(), atol=1e-6)


def test_token_ids_with_shared_vocabulary_skip_retokenization(gpt2):
    model, tok = gpt2
    ids = torch.randint(0, V - 1, (4, 8), generator=torch.Generator().manual_seed(3)).tolist()
    a = generative_perplexity((model, tok), token_ids=ids, source_tokenizer=tok, bootstrap=0)
    b = generative_perplexity((model, tok), [tok.decode(r) for r in ids], bootstrap=0)
    assert not a["protocol"]["retokenized"] and b["protocol"]["retokenized"]
    assert a["gen_ppl"] == pytest.approx(b["gen_ppl"], rel=1e-9)
    c = generative_perplexity((model, tok), token_ids=ids, source_tokenizer=tok, eos="append", bootstrap=0)
    assert c["tokens"] == a["tokens"] + 4 and c["protocol"]["eos_policy"] == "append"


def test_reference_that_cannot_decode_samples_raises_one_line(gpt2):
    model, _ = gpt2
    narrow = word_tokenizer([f"w{i}" for i in range(V - 2)] + ["[UNK]"], unk="[UNK]")  # no "w22"
    with pytest.raises(DataError) as e:
        generative_perplexity((model, narrow), ["w1 w2", "w3 w22 w4"])
    assert "sample 1" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError):  # ids outside the reference vocabulary, scored directly
        generative_perplexity((model, narrow), token_ids=[[1, 99]], retokenize_mode="never")
    with pytest.raises(TextDiffError):
        load_reference("/nonexistent/reference-folder")
    with pytest.raises(DataError):
        generative_perplexity((model, narrow), [])


def test_entropy_of_uniform_tokens_is_log_v():
    V_, n = 16, 8192
    ids = torch.randint(0, V_, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    assert abs(unigram_entropy(ids) - math.log(V_)) < 0.01
    assert unigram_entropy([5] * 100) == 0.0


def test_distinct_and_repetition_known_values():
    rep = [1, 2, 1, 2, 1, 2, 1, 2]  # bigrams: (1,2),(2,1) repeated
    fresh = [3, 4, 5, 6, 7, 8, 9, 10]
    d = diversity([rep, fresh], ns=(1, 2))
    assert d["distinct_1"] == pytest.approx((2 + 8) / 16)
    assert d["rep_2"] == pytest.approx(((1 - 2 / 7) + 0.0) / 2)
    assert d["entropy_per_sample"] == pytest.approx([math.log(2), math.log(8)])
    assert d["rep_adjacent"] == 0.0
    with pytest.raises(DataError):
        diversity([])
