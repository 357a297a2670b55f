"""ShuffleNet V1 (Zhang et al. 2018) and ShuffleNet V2 (Ma et al. 2018).

Both have a 24-channel 3×3 stem, three stages of 4, 8 and 4 units (the first unit of each stage
has stride 2), global average pooling and a linear classifier.

ShuffleNet V1 unit: ``GConv 1×1 (g) → BN → ReLU → shuffle(g) → DW 3×3 → BN → GConv 1×1 (g) → BN``
with bottleneck width = output width / 4 (the very first 1×1 is not grouped, as in the paper);
stride 1: ``ReLU(x + branch)``; stride 2: ``concat(AvgPool 3×3/2 (x), ReLU(branch))``. Stage widths
for g = 1, 2, 3, 4, 8 are those of the paper's Table 1 (240/480/960 for g = 3). ``width_mult = s``
builds "ShuffleNet s×": every width, the stem's included, is scaled by s and rounded to a multiple
of 4g (stage widths, so the bottleneck splits into g groups) or g (the stem). For g = 3 this gives
the megvii widths of 0.5×/1.0×/2.0× (their 1.5× keeps a 24-channel stem; ours has 36).

ShuffleNet V2: torchvision's ``shufflenet_v2_x{0_5,1_0,1_5,2_0}``. Stride-1 unit: split the
channels in half, ``PW → BN → ReLU → DW 3×3 → BN → PW → BN → ReLU`` on the second half, concat,
shuffle(2); stride-2 unit: both halves are branches (the left ``DW/2 → BN → PW → BN → ReLU``).
A 1×1 conv to 1024 (2048 at 2.0×) precedes pooling. ImageNet counts at 224², 1000 classes:
0.5× 1,366,792 params / 40,476,448 MACs; 1.0× 2,278,604 / 144,907,992.

ImageNet layout (``imagenet=True``): the stem has stride 2 and is followed by a 3×3/2 max-pool.
CIFAR layout (default): stride-1 stem and no max-pool (as in kuangliu/pytorch-cifar), so the three
stages take 32×32 → 4×4 (28×28 → 4×4).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import SepconvError
from ..nn import ChannelShuffle
from ._common import flag, kaiming_init_, one_of, positive_float
from .registry import register_model

STAGE_REPEATS = (4, 8, 4)
STEM_WIDTH = 24
# ShuffleNet V1, Table 1: output widths of stages 2-4 for each number of groups.
V1_STAGE_WIDTHS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
# ShuffleNet V2, Table 5 / torchvision: widths of stages 2-4 and of the last 1×1 conv.
V2_WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def _round_to(value: float, multiple: int) -> int:
    # Half-up rounding (Python's round() would send 2.5 to 2), at least one multiple.
    return max(multiple, int(value / multiple + 0.5) * multiple)


def _stem(in_channels: int, width: int, imagenet: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, 2 if imagenet else 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    if imagenet:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Sequential(*layers)


class ShuffleV1Unit(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, stride: int, groups: int, group_first: bool
    ) -> None:
        super().__init__()
        self.stride = stride
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        mid = out_channels // 4
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False, groups=groups if group_first else 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            ChannelShuffle(groups) if groups > 1 else nn.Identity(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )
        # The pooled shortcut is already non-negative (it averages ReLU outputs), so only the
        # branch needs the activation; for stride 1 the ReLU follows the sum.
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            return torch.cat((self.shortcut(x), self.relu(self.branch(x))), dim=1)
        return self.relu(x + self.branch(x))


class ShuffleNetV1(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        groups: int = 3,
        width_mult: float = 1.0,
        imagenet: bool = False,
    ) -> None:
        super().__init__()
        stem = _round_to(STEM_WIDTH * width_mult, groups)
        widths = [_round_to(w * width_mult, 4 * groups) for w in V1_STAGE_WIDTHS[groups]]
        self.stem = _stem(in_channels, stem, imagenet)
        channels = stem
        stages = []
        for index, (repeats, out) in enumerate(zip(STAGE_REPEATS, widths)):
            units = []
            for i in range(repeats):
                # The paper leaves the first 1×1 ungrouped: the stem has too few channels.
                group_first = not (index == 0 and i == 0)
                units.append(ShuffleV1Unit(channels, out, 2 if i == 0 else 1, groups, group_first))
                channels = out
            stages.append(nn.Sequential(*units))
        self.stage2, self.stage3, self.stage4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stem(x))))
        return self.fc(self.flatten(self.avgpool(x)))


class ShuffleV2Unit(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        if stride == 1 and in_channels != 2 * half:
            raise ValueError("a stride-1 ShuffleNet V2 unit keeps its width")
        if stride == 2:
            self.branch1 = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Identity()
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels if stride == 2 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
            out = torch.cat((self.branch1(left), self.branch2(right)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, imagenet: bool = False
    ) -> None:
        super().__init__()
        *widths, last = V2_WIDTHS[width_mult]
        self.stem = _stem(in_channels, STEM_WIDTH, imagenet)
        channels = STEM_WIDTH
        stages = []
        for repeats, out in zip(STAGE_REPEATS, widths):
            units = [ShuffleV2Unit(channels, out, 2)]
            units += [ShuffleV2Unit(out, out, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            channels = out
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(
            nn.Conv2d(channels, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(last, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stem(x))))
        return self.fc(self.flatten(self.avgpool(self.conv5(x))))


@register_model(
    "shufflenet_v1",
    description="ShuffleNet V1 (Zhang et al. 2018), g=3, 1.0x, CIFAR stem",
    family="shufflenet",
    groups=3,
    width_mult=1.0,
    imagenet=False,
)
def shufflenet_v1(
    num_classes: int = 10,
    in_channels: int = 3,
    groups: int = 3,
    width_mult: float = 1.0,
    imagenet: bool = False,
) -> ShuffleNetV1:
    """ShuffleNet V1 with ``groups`` ∈ {1, 2, 3, 4, 8} and scale factor ``width_mult`` (s×)."""
    g = one_of("groups", groups, sorted(V1_STAGE_WIDTHS))
    scale = positive_float("width_mult", width_mult)
    return ShuffleNetV1(num_classes, in_channels, g, scale, flag("imagenet", imagenet))


@register_model(
    "shufflenet_v2",
    description="ShuffleNet V2 (Ma et al. 2018), 1.0x, CIFAR stem",
    family="shufflenet",
    width_mult=1.0,
    imagenet=False,
)
def shufflenet_v2(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, imagenet: bool = False
) -> ShuffleNetV2:
    """ShuffleNet V2 at ``width_mult`` ∈ {0.5, 1.0, 1.5, 2.0} (the published widths)."""
    scale = positive_float("width_mult", width_mult)
    if scale not in V2_WIDTHS:
        raise SepconvError(
            f"option width_mult of shufflenet_v2 must be one of {', '.join(map(str, V2_WIDTHS))}, got {width_mult!r}"
        )
    return ShuffleNetV2(num_classes, in_channels, scale, flag("imagenet", imagenet))
