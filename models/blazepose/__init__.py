"""The ``blazepose`` model set: MediaPipe's pretrained pose detector (TFLite) and full landmark model (ONNX).

``build`` takes both from the ``mediapipe==0.10.21`` wheel (never installed) and converts the landmark model with
tf2onnx; ``runtime.BlazePoseEstimator`` runs them. Pre/post-processing lives in plain numpy modules:
``detection`` (anchors, decoding, NMS), ``geometry`` (crops and inverse mapping), ``landmarks`` (outputs to px and mm).
"""

from models.blazepose.skeleton import JOINT_EDGES, JOINT_NAMES, N_JOINTS

__all__ = ["JOINT_EDGES", "JOINT_NAMES", "N_JOINTS"]
