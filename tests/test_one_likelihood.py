"""One likelihood estimator (issue 29, item 5): ``DiffusionLM.score`` / ``textdiff score``, the harness
(:func:`textdiff.eval.elbo.evaluate_likelihood`) and training validation (:func:`textdiff.training.loop.evaluate`)
give the same NELBO for the same model, text, seed and number of t samples: they all call
:func:`textdiff.objective.estimate_nelbo`, and text i of ``score`` is row i of the other two."""
import datasets
import pytest
import torch

from textdiff.eval.elbo import evaluate_likelihood
from textdiff.lm import DiffusionLM
from textdiff.objective import estimate_nelbo
from textdiff.processes.base import build_process
from textdiff.training.loop import evaluate

TEXTS = ["The list of things.", "Another sentence here."]


def _block_lm(lm):
    """A random block-diffusion model (one t per block of 4) on the tiny run's tokenizer."""
    from textdiff.models.configuration_textdiff import TextDiffConfig
    from textdiff.models.modeling_textdiff import TextDiffModel

    V = len(lm.tokenizer)
    process = build_process({"name": "block", "block_size": 4}, vocab_size=V, mask_id=lm.tokenizer.mask_token_id)
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2.0,
                                         max_position_embeddings=64, attention="block_causal", block_size=4)).eval()
    return DiffusionLM(model, lm.tokenizer, process, seq_len=64)


def _rows(lm, texts):
    """The rows ``score`` scores: each text + EOS, filled with EOS to whole blocks."""
    out = []
    for text in texts:
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"] + [lm.tokenizer.eos_token_id]
        block = lm.process.block_size or 1
        out.append(ids + [lm.tokenizer.eos_token_id] * (-len(ids) % block))
    return out


@pytest.mark.parametrize("kind", ["masked", "block"])
def test_score_harness_and_validation_give_the_same_number(tiny_trained, kind):
    lm = tiny_trained.lm if kind == "masked" else _block_lm(tiny_trained.lm)
    K, seed = 6, 11
    scores = lm.score(TEXTS, t_samples=K, seed=seed)
    rows = _rows(lm, TEXTS)
    for i, ids in enumerate(rows):
        # the harness, with text i as row i of a one-row batch (same call layout as score: K draws per call)
        harness = evaluate_likelihood(lm.model, lm.process, torch.tensor([ids]), t_samples=K, seed=seed, batch_size=K,
                                      bootstrap=0)
        direct = estimate_nelbo(lm.model, lm.process, torch.tensor([ids]), seed=seed, t_samples=K, rows=[i],
                                rows_per_call=K)
        assert float(direct.nats[0]) == scores[i]
        if i == 0:
            assert harness.row_nats[0] == pytest.approx(scores[0], rel=1e-12)
        # training validation over the same rows (noise keyed by the row index)
        val = evaluate(lm.model, lm.process, datasets.Dataset.from_dict({"input_ids": [ids]}).with_format("torch"),
                       batch_size=K, max_batches=0, t_samples=K, device="cpu", seed=seed)
        lm.model.eval()
        if i == 0:
            assert val["val_nelbo"] * val["val_tokens"] == pytest.approx(scores[0], rel=1e-12)
            assert val["val_tokens"] == len(ids)
    # text 1 as row 1 of a two-row harness batch (other grouping of the same draws)
    both = torch.tensor([rows[1], rows[1]])
    harness = evaluate_likelihood(lm.model, lm.process, both, t_samples=K, seed=seed, batch_size=2, bootstrap=0)
    assert harness.row_nats[1] == pytest.approx(scores[1], rel=1e-6)
    assert harness.row_nats[0] != pytest.approx(scores[1], rel=1e-6)  # row 0: other noise
    # the seed matters, and the number is a finite positive NELBO
    other = lm.score(TEXTS[:1], t_samples=K, seed=seed + 1)[0]
    assert other != scores[0] and all(0 < s < 1e4 for s in scores)


def test_grouping_of_draws_changes_no_draw(tiny_trained):
    """Rows per call and batch composition change no noise draw: a row's number depends on (seed, row, K) only."""
    lm = tiny_trained.lm
    rows = _rows(lm, [TEXTS[0]] * 3)
    x0 = torch.tensor(rows)
    together = estimate_nelbo(lm.model, lm.process, x0, seed=3, t_samples=4, rows=[5, 6, 7], rows_per_call=12)
    alone = [estimate_nelbo(lm.model, lm.process, x0[i:i + 1], seed=3, t_samples=4, rows=[5 + i], rows_per_call=1)
             for i in range(3)]
    for i in range(3):
        assert torch.allclose(together.totals[i], alone[i].totals[0], rtol=1e-5, atol=0)
    assert not torch.equal(together.totals[0], together.totals[1])  # same text, other row index: other noise


def test_exact_process_uses_one_draw():
    from textdiff.models.configuration_textdiff import TextDiffConfig
    from textdiff.models.modeling_textdiff import TextDiffModel

    process = build_process({"name": "ar", "start_id": 0}, vocab_size=20)
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=20, hidden_size=16, num_layers=1, num_heads=2, mlp_ratio=2.0,
                                         max_position_embeddings=16, attention="causal")).eval()
    est = estimate_nelbo(model, process, torch.tensor([[3, 4, 5, 6]]), seed=0, t_samples=8)
    logp = torch.log_softmax(model(torch.tensor([[0, 3, 4, 5]])).logits.double(), -1)[0]
    nll = -sum(float(logp[i, tok]) for i, tok in enumerate([3, 4, 5, 6]))
    assert est.totals.shape == (1, 1) and float(est.nats[0]) == pytest.approx(nll, rel=1e-5)
