"""The ``metrabs`` model set: a user's MeTRAbs split artifacts (TF detector SavedModel, ONNX backbone, metadata).

``import_metrabs`` turns the artifacts into a model set (metadata pickle read safely and stored as JSON);
``runtime.MetrabsEstimator`` runs it (imported lazily: it needs TensorFlow and ONNX Runtime). Pre/post-processing is
plain numpy in ``processing``.
"""

from models.metrabs.importer import DEFAULT_SKELETON, import_metrabs
from models.metrabs.metadata import RestrictedUnpickler, UnsafePickleError, load_pickle, pickle_to_json

__all__ = [
    "DEFAULT_SKELETON",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "import_metrabs",
    "load_pickle",
    "pickle_to_json",
]
