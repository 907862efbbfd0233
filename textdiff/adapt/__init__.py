"""Turning an autoregressive LM into a diffusion LM (issue 26): the pieces that need no loader.

* :mod:`~textdiff.adapt.config`: the ``adapt:`` recipe section (:class:`AdaptConfig`);
* :mod:`~textdiff.adapt.attention`: attention annealing from causal to the target, and which output
  row predicts which token (the shift);
* :mod:`~textdiff.adapt.complementary`: complementary masks and the complement row's weight;
* :mod:`~textdiff.adapt.block_schedule`: block size by step (LLaDA 2.0's warmup-stable-decay);
* :mod:`~textdiff.adapt.mask_token`: the [MASK] row of the embedding and head;
* :mod:`~textdiff.adapt.architectures`: which transformers causal LMs take a custom mask.

Only the config is imported here, so the recipe can hold it without pulling in the models.
"""
from .config import AdaptConfig, BlockPhase

__all__ = ["AdaptConfig", "BlockPhase"]
