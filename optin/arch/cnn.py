"""Channel pruning of plain-torch CNNs (``optin.models.cnn``): CIFAR ResNets and VGG-style chains.

A CNN is seen as a chain of prunable layers. Layer l takes its input x, computes the prunable
activation ``act = activation(l, x)`` (ResNet: the inner relu(bn1(conv1(x))) of basic block l; VGG:
relu(bn(conv(x))) of conv l or relu(linear(x)) of a hidden classifier layer), and ``finish(l, x, act)``
gives the next layer's input and the tap. Masking channel c zeroes act[:, c]: the engine computes the
activation once per layer and stacks the masked copies along the batch.

Taps are block outputs (ResNet) or the layer activations (VGG), as [rows, channels] with every
spatial position a row, the token rows of manifold distillation.

MACs: every conv and linear counts (the CNN papers' whole-network convention); each is described
as (MACs per input-output channel pair, input group or fixed count, output group or fixed count), a
group being a prunable layer, so that the cost of a VGG conv is bilinear in the kept channels of the
two layers it connects and that of a ResNet block is additive in its inner channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from optin.engine.flops import MacOp, network_macs  # noqa: F401 - the CNN MAC model lives with the others
from optin.arch.base import no_spec
from optin.engine.masks import Kept
from optin.models import cnn


def to_rows(t: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N*H*W, C] (every spatial position a row); [N, C] stays."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) if t.dim() == 4 else t


def apply_mask(act: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return act
    return act * mask.view(1, -1, *([1] * (act.dim() - 2))).to(act.dtype)


def _repeat_to(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if len(t) == n else t.repeat(n // len(t), *([1] * (t.dim() - 1)))


class ConvNetAdapter:
    family: str
    unit_kind = "channel"
    decoder_taps = 0
    final_tap_is_output = False
    readout_layers: tuple[int, ...] = ()

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: masks, index tensors and slim models go there."""
        return next(self.model.parameters()).device

    @property
    def final_tap(self) -> int:
        return self.num_layers - 1

    @property
    def num_layers(self) -> int:
        return len(self.unit_counts())

    def unit_counts(self, kind: str = "channel") -> list[int]:
        raise NotImplementedError

    def min_channels(self) -> list[int]:
        """Channels a layer must keep: 1 in a chain (an empty layer would cut the network)."""
        raise NotImplementedError

    def layer(self, layer: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(layer, x, apply_mask(self.activation(layer, x), mask))

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor], channel_masks: list | None = None, rows=None):
        """Masked forward: (layer inputs 0..L, taps as rows, logits). ``rows`` is accepted for the
        engine's protocol: images have no padding."""
        x = self.stem(batch["pixel_values"])
        inputs, taps = [x], []
        for layer in range(self.num_layers):
            x, tap = self.layer(layer, x, channel_masks[layer] if channel_masks is not None else None)
            inputs.append(x)
            taps.append(tap)
        return inputs, taps, self.logits(x)

    def kept_masks(self, kept: Kept) -> list[torch.Tensor]:
        """0/1 channel mask tensors per layer for a Kept selection on the unpruned model."""
        masks = []
        for layer, n in enumerate(self.unit_counts()):
            mask = torch.zeros(n, device=self.device)
            mask[list(kept["channel"][layer])] = 1.0
            masks.append(mask)
        return masks

    def masked_logits(self, batch: dict[str, torch.Tensor], kept: Kept) -> torch.Tensor:
        """The unpruned network's logits with only ``kept``'s channels: what its slim model must output."""
        return self.forward(batch, self.kept_masks(kept))[2]

    @staticmethod
    def save_slim(slim_model: nn.Module, path, *, tokenizer=None, **spec) -> None:
        """Save so that ``load_slim`` (optin.models.cnn.load_convnet) rebuilds it."""
        no_spec(spec, "CNN", tokenizer)
        cnn.save_convnet(slim_model, path)

    @staticmethod
    def load_slim(path) -> nn.Module:
        return cnn.load_convnet(path)

    # Subclasses: stem, activation, finish, logits, mac_ops, slim, filter_norms.


class CifarResNetAdapter(ConvNetAdapter):
    """Units: the inner channels of every basic block (the residual widths never change)."""

    family = "cifar_resnet"

    @classmethod
    def handles(cls, model) -> bool:
        return isinstance(model, cnn.CifarResNet)

    def unit_counts(self, kind: str = "channel") -> list[int]:
        return [block.width for block in self.model.blocks]

    def min_channels(self) -> list[int]:
        return [0] * self.num_layers

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.stem(pixel_values)

    def activation(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        block = self.model.blocks[layer]
        return block.inner(x) if block.width else None

    def finish(self, layer: int, x: torch.Tensor, act: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.model.blocks[layer]
        n = len(act) if act is not None else len(x)
        identity = _repeat_to(block.shortcut(x), n)
        out = F.relu(block.bn2(block.conv2(act)) + identity) if block.width else block.finish(x, None)
        return out, to_rows(out)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.classify(h)

    def mac_ops(self, input_size: int) -> list[MacOp]:
        m = self.model
        cfg = m.config
        ops = [MacOp("conv1", 9.0 * input_size**2, None, None, cfg["in_channels"], cfg["stage_widths"][0])]
        size, cin = input_size, cfg["stage_widths"][0]
        for index, block in enumerate(m.blocks):
            cout = cfg["stage_widths"][index // cfg["depth"]]
            size = (size - 1) // block.stride + 1  # 3x3 conv, padding 1
            ops.append(MacOp(f"block{index}.conv1", 9.0 * size * size, None, index, src_fixed=cin))
            ops.append(MacOp(f"block{index}.conv2", 9.0 * size * size, index, None, dst_fixed=cout))
            if block.downsample is not None:
                ops.append(MacOp(f"block{index}.downsample", float(size * size), None, None, cin, cout))
            cin = cout
        ops.append(MacOp("fc", 1.0, None, None, m.fc.in_features, m.fc.out_features))
        return ops

    def filter_norms(self) -> list[torch.Tensor]:
        return [block.conv1.weight.detach().abs().sum(dim=(1, 2, 3)) if block.width else torch.zeros(0, device=self.device)
                for block in self.model.blocks]

    @torch.no_grad()
    def slim(self, kept: Kept) -> cnn.CifarResNet:
        m = self.model
        cfg = dict(m.config, inner_widths=kept.counts("channel"))
        with torch.device(self.device):  # the slim model next to the dense one
            slim = cnn.build_convnet(cfg)
        source = m.state_dict()
        target = slim.state_dict()
        for name in target:
            # Everything but the sliced inner conv1/bn1/conv2 of the blocks (the stem's conv1/bn1 included).
            if name in source and not any(part in name for part in (".conv1.", ".bn1.", ".conv2.")):
                target[name] = source[name]
        for index, (block, idx) in enumerate(zip(m.blocks, kept["channel"], strict=True)):
            prefix = _block_prefix(m, index)
            if idx:
                rows = torch.as_tensor(list(idx), device=self.device)
                target[f"{prefix}conv1.weight"] = source[f"{prefix}conv1.weight"][rows]
                for key in ("weight", "bias", "running_mean", "running_var"):
                    target[f"{prefix}bn1.{key}"] = source[f"{prefix}bn1.{key}"][rows]
                target[f"{prefix}bn1.num_batches_tracked"] = source[f"{prefix}bn1.num_batches_tracked"]
                target[f"{prefix}conv2.weight"] = source[f"{prefix}conv2.weight"][:, rows]
            else:
                bn = block.bn2
                target[f"{prefix}residual_constant"] = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
        slim.load_state_dict({k: v.clone() for k, v in target.items()}, strict=True)
        return slim.eval()


def _block_prefix(model: cnn.CifarResNet, index: int) -> str:
    depth = model.config["depth"]
    return f"layer{index // depth + 1}.{index % depth}."


class VggAdapter(ConvNetAdapter):
    """Units: the output channels of every conv and the neurons of every hidden classifier layer."""

    family = "vgg"

    def __init__(self, model: cnn.VGG):
        super().__init__(model)
        cfg = model.config
        features = list(model.features)
        self.convs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None, bool]] = []  # conv, bn, pooled after
        for i, module in enumerate(features):
            if isinstance(module, nn.Conv2d):
                bn = features[i + 1] if cfg["batch_norm"] else None
                self.convs.append([module, bn, False])
            elif isinstance(module, nn.MaxPool2d):
                self.convs[-1][2] = True
        self.linears = [m for m in model.classifier if isinstance(m, nn.Linear)]

    @classmethod
    def handles(cls, model) -> bool:
        return isinstance(model, cnn.VGG)

    def unit_counts(self, kind: str = "channel") -> list[int]:
        return [conv.out_channels for conv, _, _ in self.convs] + [lin.out_features for lin in self.linears[:-1]]

    def min_channels(self) -> list[int]:
        return [1] * self.num_layers

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values

    def activation(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if layer < len(self.convs):
            conv, bn, _ = self.convs[layer]
            y = conv(x)
            return F.relu(bn(y) if bn is not None else y)
        return F.relu(self.linears[layer - len(self.convs)](x))

    def finish(self, layer: int, x: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tap = to_rows(act)
        if layer < len(self.convs):
            out = F.max_pool2d(act, 2) if self.convs[layer][2] else act
            if layer == len(self.convs) - 1:
                out = torch.flatten(out, 1)
            return out, tap
        return act, tap

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.linears[-1](h)

    def mac_ops(self, input_size: int) -> list[MacOp]:
        ops, size, cin = [], input_size, self.model.config["in_channels"]
        for index, (conv, _, pooled) in enumerate(self.convs):
            ops.append(MacOp(f"conv{index}", 9.0 * size * size, index - 1 if index else None, index, src_fixed=cin))
            size = size // 2 if pooled else size
        first = len(self.convs)
        for j, lin in enumerate(self.linears):
            per_pair = float(size * size) if j == 0 else 1.0  # the first Linear reads every position of each channel
            src = first + j - 1
            dst = first + j if j < len(self.linears) - 1 else None
            ops.append(MacOp(f"linear{j}", per_pair, src, dst, dst_fixed=lin.out_features))
        return ops

    def filter_norms(self) -> list[torch.Tensor]:
        norms = [conv.weight.detach().abs().sum(dim=(1, 2, 3)) for conv, _, _ in self.convs]
        return norms + [lin.weight.detach().abs().sum(dim=1) for lin in self.linears[:-1]]

    @torch.no_grad()
    def slim(self, kept: Kept) -> cnn.VGG:
        cfg = dict(self.model.config)
        widths = kept.counts("channel")
        if min(widths) < 1:
            raise ValueError(f"every VGG layer must keep a channel; kept counts {widths}")
        n_convs = len(self.convs)
        convs, i = [], 0
        for v in cfg["convs"]:
            convs.append(v if v == "M" else widths[(i := i + 1) - 1])
        with torch.device(self.device):
            slim = cnn.build_convnet(dict(cfg, convs=convs, hidden=widths[n_convs:]))
        slim_adapter = VggAdapter(slim)
        rows = [torch.as_tensor(list(k), device=self.device) for k in kept["channel"]]
        cin = torch.arange(cfg["in_channels"], device=self.device)
        for index, ((conv, bn, _), (new_conv, new_bn, _)) in enumerate(zip(self.convs, slim_adapter.convs, strict=True)):
            new_conv.weight.copy_(conv.weight[rows[index]][:, cin])
            new_conv.bias.copy_(conv.bias[rows[index]])
            if bn is not None:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new_bn, key).copy_(getattr(bn, key)[rows[index]])
                new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
            cin = rows[index]
        area = self.model.flat_size**2
        cols = (cin[:, None] * area + torch.arange(area, device=self.device)[None]).reshape(-1)  # flatten order: channel-major
        for j, (lin, new_lin) in enumerate(zip(self.linears, slim_adapter.linears, strict=True)):
            out_rows = rows[n_convs + j] if j < len(self.linears) - 1 else torch.arange(lin.out_features, device=self.device)
            new_lin.weight.copy_(lin.weight[out_rows][:, cols])
            new_lin.bias.copy_(lin.bias[out_rows])
            cols = out_rows
        return slim.eval()


ADAPTER_CLASSES = (CifarResNetAdapter, VggAdapter)
