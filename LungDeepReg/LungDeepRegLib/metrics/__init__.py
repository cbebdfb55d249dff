"""Evaluation metrics: landmark TRE (more metric modules add their imports below).

Conventions: points in LPS mm, displacement fields in LPS mm on the fixed grid (fixed to
moving), errors in mm.
"""

from .landmarks import TREProtocol as TREProtocol
from .landmarks import check_inside as check_inside
from .landmarks import map_points as map_points
from .landmarks import snap_to_voxel as snap_to_voxel
from .landmarks import summarize as summarize
from .landmarks import target_registration_error as target_registration_error
