"""How much to trust a saliency map: faithfulness curves and randomisation sanity checks.

- :func:`deletion_insertion`: does the map rank the pixels the model needs
  first? (Petsiuk et al. 2018)
- :func:`sanity_check`: does the map change when the model's weights are
  randomised? (Adebayo et al. 2018)

Both run their passes through the engine's scheduler (chunks, progress,
cancel) and never change the user's model.
"""

from __future__ import annotations

from .curves import Curves, blur_sigma, deletion_insertion
from .sanity import SanityCheck, sanity_check
from .similarity import spearman, ssim

__all__ = ["Curves", "SanityCheck", "blur_sigma", "deletion_insertion", "sanity_check", "spearman", "ssim"]
