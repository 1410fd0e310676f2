"""MTCNN: the ONNX graphs against a NumPy reference of the Keras layers, NMS, the pyramid, patches,
and a real face (skimage's astronaut: exactly one face, in the right place)."""

from __future__ import annotations

import numpy as np
import pytest

from asmnet.detection import DetectorOptionError, available_detectors, box_iou, make_detector
from asmnet.detection.mtcnn_detector import (
    PNET_MIN_PX,
    Halvings,
    MtcnnDetector,
    load_mtcnn_weights,
    nms,
    pyramid_scales,
    regress,
    rnet_graph,
    square,
)

needs_mtcnn = pytest.mark.skipif(available_detectors().get("mtcnn") != "ok",
                                 reason=f"mtcnn: {available_detectors().get('mtcnn')}")


# -- NumPy reference of the Keras layers (NHWC), to check the graphs' layout conversion ----------
def conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, x * slope.reshape(-1))


def maxpool(x: np.ndarray, size: int, same: bool) -> np.ndarray:
    n, h, w, c = x.shape
    if same:  # Keras/TF "same": output ceil(n / 2), padding (with -inf) mostly at the end
        oh, ow = -(-h // 2), -(-w // 2)
        ph, pw = max((oh - 1) * 2 + size - h, 0), max((ow - 1) * 2 + size - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::2, ::2]
    return windows.max(axis=(-1, -2))


def rnet_reference(weights: list[np.ndarray], patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = list(weights)
    x = (patch.astype(np.float64) - 127.5) / 128.0
    x = maxpool(prelu(conv_valid(x, w[0], w[1]), w[2]), 3, same=True)
    x = maxpool(prelu(conv_valid(x, w[3], w[4]), w[5]), 3, same=False)
    x = prelu(conv_valid(x, w[6], w[7]), w[8])
    x = x.transpose(0, 2, 1, 3).reshape(len(x), -1)  # Keras Permute((2, 1, 3)) + Flatten
    x = prelu(x @ w[9] + w[10], w[11])
    reg = x @ w[12] + w[13]
    logits = x @ w[14] + w[15]
    prob = np.exp(logits - logits.max(1, keepdims=True))
    return reg, prob / prob.sum(1, keepdims=True)


@needs_mtcnn
def test_rnet_graph_matches_the_keras_layers() -> None:
    import onnxruntime as ort

    weights = load_mtcnn_weights()["rnet"]
    session = ort.InferenceSession(rnet_graph(weights), providers=["CPUExecutionProvider"])
    patches = np.random.default_rng(0).integers(0, 256, size=(5, 24, 24, 3), dtype=np.uint8)  # RGB
    reg, prob = session.run(None, {"image": np.ascontiguousarray(patches[..., ::-1])})  # the graph reads BGR
    ref_reg, ref_prob = rnet_reference(weights, patches)
    np.testing.assert_allclose(reg, ref_reg, atol=2e-4)
    np.testing.assert_allclose(prob, ref_prob, atol=2e-4)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 5, 5], [21, 21, 30, 30]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.8, 0.6])
    keep = nms(boxes, scores, 0.5)
    # 1 beats 0 (IoU 0.68); 3 lies inside 0 with IoU 0.25 < 0.5: kept; 4 beats 2 (IoU 0.81)
    assert keep.tolist() == [1, 3, 4]
    # overlap over the smaller box: 64 % of 3 lies inside 1 -> dropped
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 4]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert nms(boxes, scores, 1.0).tolist() == [1, 0, 3, 4, 2]  # nothing overlaps by more than 100 %
    with pytest.raises(ValueError, match="mode"):
        nms(boxes, scores, 0.5, mode="max")


def test_pyramid_scales_cover_min_face_to_the_whole_image() -> None:
    scales = pyramid_scales(480, 640, min_face=30, factor=0.709)
    assert 30 * scales[0] >= PNET_MIN_PX > 30 * scales[0] * 0.709  # the coarsest level that shows 30 px at 10 px
    np.testing.assert_allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 480 * scales[-1] >= 12 > 480 * scales[-1] * 0.709  # the last level still holds one window
    assert pyramid_scales(8, 8, min_face=40) == []  # too small for even one window at the first scale
    assert len(pyramid_scales(480, 640, min_face=80)) < len(scales)
    # the default's pyramid is the one its speed and misses were measured with: 12 / 48, x 0.55
    assert pyramid_scales(480, 640, 48, 0.55) == [0.25, 0.25 * 0.55, 0.25 * 0.55 * 0.55, 0.25 * 0.55 * 0.55 * 0.55]
    with pytest.raises(ValueError):
        pyramid_scales(100, 100, min_face=0)


def test_box_helpers() -> None:
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])
    np.testing.assert_allclose(square(boxes), [[0.0, 20.0, 40.0, 60.0]])
    np.testing.assert_allclose(regress(boxes, np.array([[0.1, -0.1, 0.0, 0.5]])), [[12.0, 16.0, 30.0, 80.0]])


def test_patches_resample_boxes_and_fill_outside_black() -> None:
    image = np.full((200, 300, 3), 200, np.uint8)
    image[50:150, 100:200] = (10, 20, 30)
    pyramid = Halvings(image)
    inside, half_out, outside, huge = pyramid.patches(
        np.array([[110, 60, 190, 140], [-50, 50, 50, 150], [400, 400, 450, 450], [100, 50, 200, 150]], float), 24)
    assert (inside == (10, 20, 30)).all()  # from a halving: still the exact colour
    assert (half_out[:, :10] == 0).all() and (half_out[:, 14:] == 200).all()
    assert (outside == 0).all()
    assert np.abs(huge[4:20, 4:20].astype(int) - (10, 20, 30)).max() <= 1
    resized = pyramid.resized(0.3)
    assert resized.shape == (60, 90, 3)


def test_mtcnn_option_errors() -> None:
    with pytest.raises(ValueError, match="min_face"):
        MtcnnDetector(min_face=2)
    with pytest.raises(ValueError, match="thresholds"):
        MtcnnDetector(thresholds=(0.6, 0.7))
    with pytest.raises(DetectorOptionError, match="takes no option upsample"):
        make_detector("mtcnn", upsample=1)


@needs_mtcnn
def test_mtcnn_finds_the_astronaut_once() -> None:
    skdata = pytest.importorskip("skimage.data", reason="the test picture is skimage's astronaut")
    image = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])
    detector = make_detector("mtcnn")
    boxes, scores, points = detector.detect_boxes(image)
    found = detector.detect(image)
    assert len(found) == 1 and len(boxes) == 1
    # her face: forehead to chin, ear to ear, in the 512 x 512 picture
    assert box_iou(found[0].box, np.array([178.0, 62.0, 266.0, 174.0])) > 0.8
    assert found[0].score > 0.99
    eyes, mouth = points[0, :2], points[0, 3:]
    assert (eyes[:, 1] < points[0, 2, 1]).all() and (mouth[:, 1] > points[0, 2, 1]).all()  # eyes above nose above mouth
    assert eyes[0, 0] < eyes[1, 0]  # the image-left eye first
    # no faces in pictures without people
    for name in ("coffee", "chelsea", "rocket"):
        assert detector.detect(np.ascontiguousarray(getattr(skdata, name)()[:, :, ::-1])) == [], name
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []  # smaller than any face
