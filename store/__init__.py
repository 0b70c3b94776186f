"""The HDF5 feature store (docs/STORE.md): the only module of the toolkit that touches h5py."""
from .errors import FingerprintMismatchError, StoreError, StoreLockedError, UserError
from .feature_store import (
    STATUS_INVALID,
    STATUS_MISSING,
    STATUS_OK,
    FeatureStore,
    open_store,
)
from .schema import (
    AFFECTNET_CLASSES,
    AFFECTNET_TO_LSD,
    AFFECTNET_TO_MTL,
    AU_NAMES,
    EXPR_NAME_TO_MTL,
    LSD_CLASSES,
    LSD_FOLDERS,
    MTL_EXPR_CLASSES,
    MTL_TO_LSD,
    SCHEMA_VERSION,
    TASKS,
    VA_NAMES,
    Task,
    get_task,
)

__all__ = [
    "AFFECTNET_CLASSES", "AFFECTNET_TO_LSD", "AFFECTNET_TO_MTL", "AU_NAMES", "EXPR_NAME_TO_MTL", "FeatureStore",
    "FingerprintMismatchError", "LSD_CLASSES", "LSD_FOLDERS", "MTL_EXPR_CLASSES", "MTL_TO_LSD", "SCHEMA_VERSION",
    "STATUS_INVALID", "STATUS_MISSING", "STATUS_OK", "StoreError", "StoreLockedError", "TASKS", "Task",
    "UserError", "VA_NAMES", "get_task", "open_store",
]
