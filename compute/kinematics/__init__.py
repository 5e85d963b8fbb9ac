"""Galaxy kinematics: rotating-disk fits and radial metallicity gradients (pure numerics)."""

from .disk import (
    C_KMS,
    DISK_FLAG_DOCS,
    FREEMAN_Y_PEAK,
    PARAMS,
    DiskData,
    DiskFit,
    DiskFitConfig,
    DiskFlag,
    disk_coordinates,
    fit_disks,
    jacobian_forward_ad,
    los_velocity,
    los_velocity_jacobian,
    rotation_curve,
)

__all__ = [
    "C_KMS",
    "DISK_FLAG_DOCS",
    "FREEMAN_Y_PEAK",
    "PARAMS",
    "DiskData",
    "DiskFit",
    "DiskFitConfig",
    "DiskFlag",
    "disk_coordinates",
    "fit_disks",
    "jacobian_forward_ad",
    "los_velocity",
    "los_velocity_jacobian",
    "rotation_curve",
]
