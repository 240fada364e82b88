"""A small DDPM-style UNet for images, sized so that 8x8 digits train in minutes on a CPU.

The layout follows Ho et al. (2020, appendix B): residual blocks with GroupNorm and
SiLU that add a time (and class) embedding, self-attention at chosen resolutions,
strided-conv downsampling, nearest-neighbour upsampling, skip connections from every
block of the down path, and a zero-initialised output convolution so that training
starts from a zero prediction. No Lightning here: the network is a plain nn.Module.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .embeddings import ConditionedNetwork, Conditioning, time_vector


def _groups(channels: int) -> int:
    """GroupNorm groups: the most (up to 32) that keep at least 4 channels per group."""
    for groups in (32, 16, 8, 4, 2):
        if channels % groups == 0 and channels // groups >= 4:
            return groups
    return 1


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels)


class ResBlock(nn.Module):
    """norm-SiLU-conv, add the projected embedding, norm-SiLU-dropout-conv, plus a (1x1-projected) skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.block1 = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.block2 = nn.Sequential(_norm(out_ch), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.block2(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the channel count {channels} at an attention resolution")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [B, heads, HW, C/heads]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """A residual block optionally followed by attention; the unit the down and up paths are built of."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool, num_heads: int):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = AttentionBlock(out_ch, num_heads) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


class UNet(ConditionedNetwork, nn.Module):
    """Noise (or x0 / v) prediction network: forward(x [B, C, H, W], t [B] in [0, 1], labels [B] | None) -> [B, C, H, W].

    `channel_mults` gives one level per entry (each level but the last halves the
    resolution); `attention_resolutions` lists the side lengths at which attention is
    applied and must be among the levels' resolutions. With `num_classes=K` the model is
    class-conditional and `null_label` (= K) is the unconditional label; labels=None
    means unconditional. Cast the model with `.double()` to run in float64.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (4,),
        num_classes: Optional[int] = None,
        dropout: float = 0.0,
        image_size: int = 8,
        time_scale: float = 1000.0,
        num_heads: int = 1,
    ):
        super().__init__()
        resolutions = _check_args(in_channels, base_channels, channel_mults, num_res_blocks,
                                  attention_resolutions, dropout, image_size)
        self.in_channels, self.image_size = in_channels, image_size
        emb_dim = 4 * base_channels
        self.cond = Conditioning(base_channels, emb_dim, num_classes, time_scale)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        attn = [r in attention_resolutions for r in resolutions]
        widths = [base_channels * m for m in channel_mults]
        self.down, skips = self._build_down(widths, num_res_blocks, emb_dim, dropout, attn, num_heads)
        mid = widths[-1]
        self.mid = nn.ModuleList([Stage(mid, mid, emb_dim, dropout, True, num_heads), ResBlock(mid, mid, emb_dim, dropout)])
        self.up = self._build_up(widths, skips, num_res_blocks, emb_dim, dropout, attn, num_heads)
        self.conv_out = nn.Sequential(_norm(base_channels), nn.SiLU(), nn.Conv2d(base_channels, in_channels, 3, padding=1))
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)

    @staticmethod
    def _build_down(widths, num_res_blocks, emb_dim, dropout, attn, num_heads):
        """Down path; returns the modules and the channel count of every skip they push."""
        blocks, skips, ch = nn.ModuleList(), [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                blocks.append(Stage(ch, width, emb_dim, dropout, attn[level], num_heads))
                ch = width
                skips.append(ch)
            if level < len(widths) - 1:
                blocks.append(Downsample(ch))
                skips.append(ch)
        return blocks, skips

    @staticmethod
    def _build_up(widths, skips, num_res_blocks, emb_dim, dropout, attn, num_heads):
        """Up path: num_res_blocks + 1 stages per level, each eating one skip, then upsampling."""
        blocks, skips, ch = nn.ModuleList(), list(skips), widths[-1]
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                blocks.append(Stage(ch + skips.pop(), widths[level], emb_dim, dropout, attn[level], num_heads))
                ch = widths[level]
            if level > 0:
                blocks.append(Upsample(ch))
        return blocks

    def forward(self, x: torch.Tensor, t, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check_input(x)
        emb = self.cond(time_vector(t, x.shape[0], x), labels, x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.mid[1](self.mid[0](h, emb), emb)
        for block in self.up:
            if isinstance(block, Stage):
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb)
        return self.conv_out(h)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"UNet expects x of shape [B, {', '.join(map(str, expected))}] "
                             f"(in_channels, image_size, image_size), got {tuple(x.shape)}")


def _check_args(in_channels, base_channels, channel_mults, num_res_blocks, attention_resolutions, dropout, image_size):
    """Validate the constructor settings; return the side length at each level."""
    if in_channels < 1 or base_channels < 1 or num_res_blocks < 1:
        raise ValueError("in_channels, base_channels and num_res_blocks must be >= 1, got "
                         f"{in_channels}, {base_channels}, {num_res_blocks}")
    if len(channel_mults) == 0 or any(m < 1 for m in channel_mults):
        raise ValueError(f"channel_mults must be a non-empty list of positive ints, got {list(channel_mults)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    levels = len(channel_mults)
    if image_size < 1 or image_size % 2 ** (levels - 1):
        raise ValueError(f"image_size={image_size} must be divisible by 2**(len(channel_mults) - 1) = {2 ** (levels - 1)}")
    resolutions = [image_size // 2**i for i in range(levels)]
    unknown = [r for r in attention_resolutions if r not in resolutions]
    if unknown:
        raise ValueError(f"attention_resolutions {unknown} are not among this UNet's resolutions {resolutions} "
                         f"(image_size={image_size}, {levels} levels)")
    return resolutions
