"""Depthwise-separable convolution as a plain ``nn.Sequential`` of standard layers.

``SeparableConv2d`` is only a named container: its children are an ordinary depthwise
``nn.Conv2d`` (``depthwise``), optionally a BatchNorm (``bn``) and an activation (``act``), and an
ordinary pointwise 1×1 ``nn.Conv2d`` (``pointwise``). Profiling, torch.fx graph analysis, BN folding
and ONNX export therefore see nothing but standard convolutions.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ..errors import SepconvError

# Activations that may sit between the depthwise and the pointwise part, by name (names are plain
# data, so they can be recorded in an architecture description).
MID_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (see :data:`MID_ACTIVATIONS`)."""
    try:
        cls = MID_ACTIVATIONS[str(name).lower()]
    except KeyError:
        known = ", ".join(sorted(MID_ACTIVATIONS))
        raise SepconvError(f"unknown activation {name!r}; choose one of {known}") from None
    return cls(inplace=True) if cls is not nn.GELU else cls()


class SeparableConv2d(nn.Sequential):
    """DW k×k (``groups = in_channels``, ``multiplier·in_channels`` outputs, no bias) → [BN → act] →
    PW 1×1 to ``out_channels``.

    Stride, padding, dilation and padding mode belong to the depthwise part; the pointwise part
    carries the bias, if any, so that a separable layer replaces a regular conv parameter for
    parameter at its output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        multiplier: int = 1,
        mid_bn: bool = False,
        mid_act: str | None = None,
        padding_mode: str = "zeros",
    ) -> None:
        if int(multiplier) != multiplier or multiplier < 1:
            raise SepconvError(f"depth multiplier must be a positive integer, got {multiplier!r}")
        mid = int(multiplier) * in_channels
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["depthwise"] = nn.Conv2d(
            in_channels,
            mid,
            kernel_size,
            stride,
            padding,
            dilation,
            groups=in_channels,
            bias=False,
            padding_mode=padding_mode,
        )
        if mid_bn:
            layers["bn"] = nn.BatchNorm2d(mid)
        if mid_act is not None:
            layers["act"] = make_activation(mid_act)
        layers["pointwise"] = nn.Conv2d(mid, out_channels, 1, bias=bias)
        super().__init__(layers)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, multiplier: int = 1, mid_bn: bool = False, mid_act: str | None = None
    ) -> SeparableConv2d:
        """A separable layer with the geometry of ``conv`` (fresh weights, same device/dtype)."""
        if conv.groups != 1:
            raise SepconvError("only regular convolutions (groups=1) can become separable")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            bias=conv.bias is not None,
            multiplier=multiplier,
            mid_bn=mid_bn,
            mid_act=mid_act,
            padding_mode=conv.padding_mode,
        )
        return layer.to(device=conv.weight.device, dtype=conv.weight.dtype)

    @property
    def multiplier(self) -> int:
        dw = self.depthwise
        return dw.out_channels // dw.in_channels
