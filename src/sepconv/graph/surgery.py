"""Per-layer surgery: keep a subset of a layer's input/output channels, in place.

Each function takes the indices to *keep* (sorted, original numbering) and replaces the layer's
parameters and buffers by the corresponding slices, updating the size attributes so that the
layer stays an ordinary torch.nn module (``repr``, ``state_dict`` and export all agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..errors import SepconvError


def _param(old: nn.Parameter, value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value.detach().clone(), requires_grad=old.requires_grad)


def slice_conv(
    conv: nn.modules.conv._ConvNd, keep_in: Sequence[int], keep_out: Sequence[int], name: str = "conv"
) -> None:
    """Keep input channels ``keep_in`` and filters ``keep_out`` of a (grouped/depthwise) conv.

    Every surviving group must keep as many inputs and outputs as the others (a grouped conv has
    one weight shape for all groups); a group that loses all its outputs must lose all its inputs,
    and disappears (this is how a depthwise conv shrinks). Buffers shaped like the weight (the
    kernel mask of :class:`~sepconv.nn.LdsConv2d`) are sliced like it.
    """
    groups = conv.groups
    in_per, out_per = conv.in_channels // groups, conv.out_channels // groups
    keep_in_t = torch.as_tensor(list(keep_in), dtype=torch.long)
    keep_out_t = torch.as_tensor(list(keep_out), dtype=torch.long)
    in_group, out_group = keep_in_t // in_per, keep_out_t // out_per
    in_count = torch.bincount(in_group, minlength=groups)
    out_count = torch.bincount(out_group, minlength=groups)
    if bool(((in_count == 0) != (out_count == 0)).any()):
        raise SepconvError(
            f"{name}: a group of the convolution would keep inputs without outputs or the reverse"
        )
    alive = out_count > 0
    new_groups = int(alive.sum())
    if new_groups == 0:
        raise SepconvError(f"{name}: every channel would be removed")
    if len(set(in_count[alive].tolist())) != 1 or len(set(out_count[alive].tolist())) != 1:
        raise SepconvError(
            f"{name}: pruning must remove equally many channels from each of its {groups} groups"
        )
    weight = conv.weight.detach()
    shape = tuple(weight.shape)
    if groups == 1 or in_per == 1:  # regular or depthwise: plain index selects

        def select(t: torch.Tensor) -> torch.Tensor:
            t = t.index_select(0, keep_out_t.to(t.device))
            return t.index_select(1, keep_in_t.to(t.device)) if groups == 1 else t

    else:
        # Row r of the new weight belongs to group out_group[r] and reads that group's kept inputs
        # (local numbering): one gather does every group at once.
        local_in = (keep_in_t - in_group * in_per).reshape(new_groups, -1)  # kept inputs, group by group
        group_rank = torch.cumsum(alive.long(), 0) - 1
        columns = local_in[group_rank[out_group]]

        def select(t: torch.Tensor) -> torch.Tensor:
            t = t[keep_out_t.to(t.device)]
            index = columns.reshape(*columns.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
            return torch.gather(t, 1, index.to(t.device))

    for name, buffer in list(conv.named_buffers(recurse=False)):
        if buffer is not None and tuple(buffer.shape) == shape:
            setattr(conv, name, select(buffer).clone())
    _assign(conv, select(weight), keep_out_t, len(keep_in), new_groups)


def _assign(
    conv: nn.modules.conv._ConvNd, weight: torch.Tensor, rows: torch.Tensor, in_channels: int, groups: int
) -> None:
    conv.weight = _param(conv.weight, weight)
    if conv.bias is not None:
        conv.bias = _param(conv.bias, conv.bias.detach()[rows.to(conv.bias.device)])
    conv.in_channels = in_channels
    conv.out_channels = len(rows)
    conv.groups = groups


def slice_linear(linear: nn.Linear, keep_in: Sequence[int], keep_out: Sequence[int]) -> None:
    linear.weight = _param(linear.weight, linear.weight.detach()[list(keep_out)][:, list(keep_in)])
    if linear.bias is not None:
        linear.bias = _param(linear.bias, linear.bias.detach()[list(keep_out)])
    linear.in_features = len(keep_in)
    linear.out_features = len(keep_out)


def slice_norm(norm: nn.Module, keep: Sequence[int]) -> None:
    """BatchNorm/InstanceNorm (affine entries and running statistics) or a per-channel PReLU."""
    index = list(keep)
    if isinstance(norm, nn.PReLU):
        norm.weight = _param(norm.weight, norm.weight.detach()[index])
        norm.num_parameters = len(index)
        return
    if getattr(norm, "weight", None) is not None:
        norm.weight = _param(norm.weight, norm.weight.detach()[index])
    if getattr(norm, "bias", None) is not None:
        norm.bias = _param(norm.bias, norm.bias.detach()[index])
    for buffer in ("running_mean", "running_var"):
        value = getattr(norm, buffer, None)
        if value is not None:
            setattr(norm, buffer, value[index].clone())
    norm.num_features = len(index)


def slice_zero_pad(shortcut: nn.Module, keep_in: Sequence[int], keep_out: Sequence[int]) -> None:
    """ZeroPadShortcut: input j still lands where its (kept) output channel now is."""
    position = {o: k for k, o in enumerate(keep_out)}
    index = [position[int(shortcut.index[j])] for j in keep_in]
    shortcut.in_channels = len(keep_in)
    shortcut.out_channels = len(keep_out)
    shortcut.index = torch.tensor(index, dtype=torch.long, device=shortcut.index.device)


def slice_gather(gather: nn.Module, keep_in: Sequence[int], keep_out: Sequence[int]) -> None:
    """ChannelGather: the kept outputs read the (renumbered) kept inputs they read before."""
    position = {int(c): k for k, c in enumerate(keep_in)}
    old = gather.index.tolist()
    try:
        index = [position[old[m]] for m in keep_out]
    except KeyError:
        raise SepconvError("a kept output of a channel gather reads a removed input") from None
    gather.in_channels = len(keep_in)
    gather.index = torch.tensor(index, dtype=torch.long, device=gather.index.device)


def slice_attribute(root: nn.Module, target: str, dim: int, keep: Sequence[int]) -> None:
    """A parameter or buffer of ``root`` (dotted name) keeps ``keep`` along ``dim``."""
    owner_name, _, attr = target.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    value = getattr(owner, attr)
    if value.shape[dim] == len(keep):
        return  # already sliced (the attribute is shared by both roots)
    index = torch.tensor(list(keep), dtype=torch.long, device=value.device)
    sliced = value.detach().index_select(dim, index).clone()
    if isinstance(value, nn.Parameter):
        setattr(owner, attr, _param(value, sliced))
    else:
        setattr(owner, attr, sliced)
