"""LungDeepRegLib: the engine of LungDeepReg (inhale/exhale lung CT registration).

Layers, bottom up: ``spatial`` (grids, sampling, displacement fields in mm) -> ``io``
(images, landmarks, transforms) -> ``metrics`` ... ``pipeline`` -> ``cli``. Nothing here
imports qt, ctk or slicer at module level, so the package runs under plain Python and
PythonSlicer alike.
"""

import os

# OpenMP threads of torch sleep at barriers instead of spinning, unless the user chose
# otherwise. Set before anything imports torch (it only counts then): with two threads on
# two cores and one core busy with other work, spinning made one optimisation step of the
# registration 7 times slower (3.8 s instead of 0.53 s); see device.thread_count.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import InputError  # noqa: E402
from .version import __version__

__all__ = ["InputError", "__version__"]
