"""Model constructors. Every model maps (N, C, H, W) floats to (N, K, H, W) logits,
K = 1 for binary masks (sigmoid head), K = num_classes otherwise (softmax head)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODEL_NAMES", "UNet", "build_model", "count_params"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net. `depth` counts resolution levels (bottleneck included),
    so depth 4 pools three times; widths double per level from `base_channels`."""

    def __init__(
        self, in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 4
    ):
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for width in widths:
            self.down.append(_double_conv(cin, width))
            cin = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, width, 2, stride=2))
            self.merge.append(_double_conv(2 * width, width))
            cin = width
        self.head = nn.Conv2d(cin, out_channels, 1)
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # note: pad to a multiple of the total stride so any image size works, crop at the end
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            # reflect needs padding smaller than the image (depth 7 pads a 32 px image by 32)
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)[..., :h, :w]


class _TorchvisionSegmentation(nn.Module):
    """torchvision's segmentation models return a dict and want 3 channels."""

    def __init__(self, net: nn.Module, in_channels: int):
        super().__init__()
        self.net = net
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)["out"]


def _torchvision(builder_name: str, **fixed) -> Callable[..., nn.Module]:
    def build(in_channels: int, out_channels: int, **_: object) -> nn.Module:
        from torchvision.models import segmentation

        builder = getattr(segmentation, builder_name)
        # untrained: no weights are downloaded, ever
        net = builder(weights=None, weights_backbone=None, num_classes=out_channels, **fixed)
        return _TorchvisionSegmentation(net, in_channels)

    return build


def _unet(in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 4) -> UNet:
    return UNet(in_channels, out_channels, base_channels, depth)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": _unet,
    "lraspp_mobilenet_v3_large": _torchvision("lraspp_mobilenet_v3_large"),
    "deeplabv3_mobilenet_v3_large": _torchvision("deeplabv3_mobilenet_v3_large", aux_loss=False),
    "deeplabv3_resnet50": _torchvision("deeplabv3_resnet50", aux_loss=False),
    "fcn_resnet50": _torchvision("fcn_resnet50", aux_loss=False),
}
MODEL_NAMES = tuple(_BUILDERS)


def build_model(name: str, in_channels: int, num_classes: int, **options: object) -> nn.Module:
    """`num_classes` as in the grid file: 1 means binary (one logit channel)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name](in_channels, num_classes, **options)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
