"""Making model packages: a checkpoint becomes a shipped model here.

- :mod:`.export`: checkpoint -> package (ONNX graph, model.json, slim weights.pt; box
  calibrations and quality thresholds); needs PyTorch.
- :mod:`.quantize`: a float package -> an INT8 one (ONNX Runtime static quantisation).
- :mod:`.error_head`: the error head added to an exported graph (ONNX and NumPy).
- :mod:`.card`: MODEL_CARD.md from model.json's ``card``.

model.json itself is read, checked and written by :mod:`asmnet.package` only. The build chain
of a shipped model, in order, is in ``scripts/README.md``. Nothing on the inference side imports
this package (tests/test_layering.py).
"""
