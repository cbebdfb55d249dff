"""Registration losses (Hering et al., MedIA 2021): stateless functions and module wrappers.

Units: displacements in LPS mm, image gradients per mm, every loss a mean over its domain.
"""

from .features import MIND_CHANNELS, mind_ssc
from .functional import (
    curvature_regularizer,
    endpoint_error,
    keypoint_loss,
    local_ncc,
    mask_alignment,
    mse,
    ngf_distance,
    ngf_edge_parameter,
    one_hot,
    volume_change_control,
    volume_change_penalty,
)
from .modules import (
    SIMILARITY_TERMS,
    TUNED_T,
    TUNED_WEIGHTS,
    CurvatureLoss,
    EndpointErrorLoss,
    KeypointLoss,
    LocalNCCLoss,
    LossWeights,
    MaskAlignmentLoss,
    MSELoss,
    NGFLoss,
    RegistrationLoss,
    VolumeChangeLoss,
    map_points,
)

__all__ = [
    "MIND_CHANNELS", "mind_ssc",
    "CurvatureLoss", "EndpointErrorLoss", "KeypointLoss", "LocalNCCLoss", "LossWeights",
    "MSELoss", "MaskAlignmentLoss", "NGFLoss", "RegistrationLoss", "SIMILARITY_TERMS",
    "TUNED_T", "TUNED_WEIGHTS",
    "VolumeChangeLoss",
    "curvature_regularizer", "endpoint_error", "keypoint_loss", "local_ncc", "map_points",
    "mask_alignment", "mse", "ngf_distance", "ngf_edge_parameter", "one_hot",
    "volume_change_control", "volume_change_penalty",
]
