"""Training and validation data: synthetic inhale/exhale pairs with known dense fields.

The JSON tables beside this package (DIR-Lab and COPDgene geometry) are package data read
by :mod:`LungDeepRegLib.io.geometry`.
"""

from .fields import breathing_field, invert_field, random_smooth_field
from .pairs import SyntheticPair, make_pair
from .synthetic import SyntheticPairSource, pair_seed

__all__ = ["SyntheticPair", "SyntheticPairSource", "breathing_field", "invert_field",
           "make_pair", "pair_seed", "random_smooth_field"]
