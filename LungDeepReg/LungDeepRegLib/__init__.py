"""LungDeepRegLib: the engine of LungDeepReg (inhale/exhale lung CT registration).

Layers, bottom up: ``spatial`` (grids, sampling, displacement fields in mm) -> ``io``
(images, landmarks, transforms) -> ``metrics`` -> ``cli``. Nothing here imports qt, ctk or
slicer at module level, so the package runs under plain Python and PythonSlicer alike.
"""

from .errors import InputError
from .version import __version__

__all__ = ["InputError", "__version__"]
