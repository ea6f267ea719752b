"""Five landmarks -> the SphereFace 112x96 crop (Liu et al., CVPR 2017, Sec. 4.1 "Preprocessing").

The paper detects five landmarks with MTCNN and warps each face by a similarity transformation onto a
fixed template; the template below is the one of the authors' released preprocessing code
(``sphereface/preprocess/code/face_align_demo.m``).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from .mtcnn import MTCNN, Detections

HEIGHT, WIDTH = 112, 96
#: (x, y) of left eye, right eye, nose tip, left and right mouth corner in the 112x96 crop.
TEMPLATE = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_to_template(landmarks: np.ndarray) -> SimilarityTransform:
    """Least-squares similarity transform (rotation, uniform scale, shift) mapping ``landmarks`` onto TEMPLATE."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (5, 2) or not np.all(np.isfinite(landmarks)):
        raise ValueError(f"landmarks must be five finite (x, y) points, got shape {landmarks.shape}")
    tform = SimilarityTransform.from_estimate(landmarks, TEMPLATE)
    if not tform:
        raise ValueError(f"degenerate landmarks, no similarity transform: {landmarks.tolist()}")
    return tform


def warp_to_template(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x96 crop of ``image`` (H, W[, C] uint8) with ``landmarks`` moved onto TEMPLATE."""
    matrix = similarity_to_template(landmarks).params[:2]
    return cv2.warpAffine(image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def outside_fraction(landmarks: np.ndarray, image_shape: tuple[int, ...]) -> float:
    """Fraction of the 112x96 crop of :func:`warp_to_template` whose pixel centres map outside the source image
    (``image_shape`` (H, W[, C])): the share of black fill, a flag for partial faces."""
    h, w = image_shape[:2]
    inverse = similarity_to_template(landmarks).inverse
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    src = inverse(np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64))
    inside = (src[:, 0] >= -0.5) & (src[:, 0] <= w - 0.5) & (src[:, 1] >= -0.5) & (src[:, 1] <= h - 0.5)
    return float(1.0 - inside.mean())


def central_face(detections: Detections, image_shape: tuple[int, ...]) -> int:
    """Index of the detected face whose box centre is closest to the image centre."""
    if not len(detections):
        raise ValueError("no face to choose from")
    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:4]) / 2
    target = np.array([image_shape[1] / 2, image_shape[0] / 2])
    return int(np.argmin(((centres - target) ** 2).sum(axis=1)))


def largest_face(detections: Detections, image_shape: tuple[int, ...]) -> int:
    """Index of the detected face with the largest box (the photo's subject in in-the-wild photos, where a
    smaller face near the centre is often a bystander or a false detection)."""
    if not len(detections):
        raise ValueError("no face to choose from")
    sides = detections.boxes[:, 2:4] - detections.boxes[:, :2]
    return int(np.argmax(sides[:, 0] * sides[:, 1]))


#: how to pick one face among several: ``central`` (LFW's convention: the person is centred) or ``largest``
FACE_RULES = {"central": central_face, "largest": largest_face}


def centre_crop(image: np.ndarray) -> np.ndarray:
    """The largest centred 112:96 region of ``image``, resized to 112x96 (fallback for pre-cropped sets)."""
    h, w = image.shape[:2]
    ch, cw = (h, round(h * WIDTH / HEIGHT)) if h * WIDTH <= w * HEIGHT else (round(w * HEIGHT / WIDTH), w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(image[y:y + ch, x:x + cw], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def detect_and_align(
    detector: MTCNN, image: np.ndarray, pad: float = 0.0, face: str = "central"
) -> tuple[np.ndarray, np.ndarray] | None:
    """(112x96 crop, landmarks in ``image`` coordinates) of the face chosen by the rule ``face`` (a key of
    :data:`FACE_RULES`), or None if none is found.

    ``pad`` adds a black border of that fraction of the longer side before detection, which helps MTCNN
    on tight face crops; landmarks are returned in the unpadded image's coordinates.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if face not in FACE_RULES:
        raise ValueError(f"face must be one of {sorted(FACE_RULES)}, got {face!r}")
    p = int(round(pad * max(image.shape[:2])))
    padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=0) if p else image
    found = detector.detect(padded)
    if not len(found):
        return None
    landmarks = found.landmarks[FACE_RULES[face](found, padded.shape)].astype(np.float64) - p
    return warp_to_template(image, landmarks), landmarks
