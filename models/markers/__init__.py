"""The ``markers`` model set: a person detector (TensorFlow SavedModel) and a pose backbone (ONNX), both built from
the project's own code and the synthetic marker palette, exact enough on the synthetic marker videos to test the
whole pipeline against ground truth.

- :mod:`models.markers.detector`: the detector graph (TensorFlow; used by the build only);
- :mod:`models.markers.backbone`: the backbone graph (``onnx.helper``; used by the build only);
- :mod:`models.markers.prepost`: crops, their affines, back-projection (numpy; no model needed);
- :mod:`models.markers.build`: ``build(dest, cache_dir) -> ModelSet``;
- :mod:`models.markers.runtime`: :class:`~models.markers.runtime.MarkersEstimator`.
"""
