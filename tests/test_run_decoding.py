"""A run from a model keeps that model's decoding setup unless the recipe changes it, and says so
(issue 30, item 1; the per-family LoRA runs are in test_sft_published.py)."""
from textdiff.config import load_recipe, to_dict
from textdiff.training.decoding import base_decoding, given_sampler_keys, run_decoding

LLADA = {"sampler": {"name": "confidence", "ordering": "confidence", "temperature": 0.0},
         "generation": {"block_size": 32}, "stop_token_ids": [65, 62]}


def test_a_recipe_without_sampler_keeps_the_base_decoding(tiny):
    raw = tiny()
    del raw["sampler"]
    recipe = load_recipe(raw=raw)
    assert recipe.sampler_given == []
    d = run_decoding(recipe, LLADA)
    assert to_dict(d.sampler)["temperature"] == 0.0 and d.sampler.name == "confidence"
    assert d.generation == {"block_size": 32} and d.stop_token_ids == [65, 62]
    assert d.note == "decoding: kept the base model's (sampler confidence, generate defaults {'block_size': 32}, stop token ids [65, 62])"


def test_the_recipe_changes_only_what_it_names_and_says_so(tiny):
    recipe = load_recipe(raw=tiny(sampler={"name": "confidence", "ordering": "margin"}))
    d = run_decoding(recipe, LLADA)
    assert (d.sampler.ordering, d.sampler.temperature) == ("margin", 0.0)
    assert d.note.startswith("decoding: the recipe's sampler section changes the base model's: ordering='confidence'->'margin'; kept")
    d = run_decoding(load_recipe(raw=tiny(sampler={"name": "threshold"})), LLADA)  # another sampler keeps what applies
    assert d.sampler.name == "threshold" and d.sampler.temperature == 0.0 and "name='confidence'->'threshold'" in d.note
    d = run_decoding(load_recipe(raw={**tiny(), "sampler": {"temperature": 0.5}}), LLADA)  # no name: the base's sampler
    assert d.sampler.name == "confidence" and d.sampler.temperature == 0.5


def test_a_recipe_built_without_load_recipe_reads_its_given_fields_from_the_defaults(tiny):
    recipe = load_recipe(raw=tiny(sampler={"name": "confidence", "ordering": "margin"}))
    del recipe.sampler_given
    assert given_sampler_keys(recipe) == {"name", "ordering"}


def test_no_base_model_saves_the_recipe_sampler(tiny):
    recipe = load_recipe(raw=tiny(sampler={"name": "confidence"}))
    assert base_decoding(None, None) is None
    d = run_decoding(recipe, None)
    assert d.sampler is recipe.sampler and d.note is None and d.generation == {}
    meta = {"process": {"name": "masked"}, "sampler": LLADA["sampler"], "generation": {"block_size": 8}}
    assert base_decoding(None, meta) == {"sampler": LLADA["sampler"], "generation": {"block_size": 8}, "stop_token_ids": []}
