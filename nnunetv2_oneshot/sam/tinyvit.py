"""LiteMedSAM's image encoder (a TinyViT-5M variant) in plain torch, for inference.

LiteMedSAM's own TinyViT code imports timm, and timm imports torchvision, which does not import next to a torch
build without its matching torchvision (our CPU machines). This is a compact re-implementation of the same forward
pass with nothing but torch: no drop-path, no activation checkpointing, no layer-wise lr decay, no model registry.
Module names and parameter shapes follow the ``image_encoder.*`` keys of LiteMedSAM's checkpoint, so its weights
load with ``strict=True`` (see ``nnunetv2_oneshot.sam.litemedsam``).

Resolution path for a 256² input (LiteMedSAM's training size):
1x1 patch embedding (no downsampling) -> MBConv stage at 256² -> merge /2 -> attention stage at 128² (window 7)
-> merge /2 -> 64² (window 14) -> merge with stride 1 -> 64² (window 7) -> neck -> (B, 256, 64, 64).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d, named ``c`` and ``bn`` as in the checkpoint.

    'Same' padding (``kernel_size // 2``). (B, C_in, H, W) -> (B, C_out, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(OrderedDict(
            c=nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_chans),
        ))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> 3x3 depthwise -> 1x1 project, plus identity, then GELU.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """1x1 conv -> 3x3 depthwise conv with ``stride`` -> 1x1 conv, GELU between.

    (B, C_in, H, W) -> (B, C_out, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(in_chans, out_chans)
        self.conv2 = ConvBN(out_chans, out_chans, 3, stride=stride, groups=out_chans)
        self.conv3 = ConvBN(out_chans, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one window, with a learned bias per head and |offset|.

    The bias of a query-key pair depends only on their absolute offset (|dy|, |dx|) within the window; the
    checkpoint stores it as ``attention_biases`` (heads, window²) with column |dy|·window + |dx|. The
    (T, T) gather index is rebuilt from the window size and not saved (the checkpoint has no such key).

    Input (N, T, C) with T = window², N = batch × windows; output (N, T, C).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        index = (ys[:, None] - ys[None, :]).abs() * window_size + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        if t != self.bias_index.shape[0]:
            raise ValueError(f"expected {self.bias_index.shape[0]} tokens per window, got input {tuple(x.shape)}")
        # the checkpoint's qkv rows are grouped by head, each head holding its q, k, v in turn
        qkv = self.qkv(self.norm(x)).view(n, t, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)  # (heads, T, T), added to the logits
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale 1/sqrt(head_dim), as trained
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear on the last axis. (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (+ residual) -> 3x3 depthwise conv -> MLP (+ residual).

    The feature map is split into non-overlapping windows of ``window_size``², zero-padded at the bottom/right
    when H or W is not a multiple. The padded tokens are NOT masked out of the attention: LiteMedSAM was
    trained that way (e.g. 128 = 18·7 + 2 pads to 133), so masking them would change the embeddings.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int):
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.window_size
        y = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, -w % s, 0, -h % s))  # (B, H', W', C), H' and W' multiples of s
        nh, nw = y.shape[1] // s, y.shape[2] // s
        y = y.reshape(b, nh, s, nw, s, c).transpose(2, 3).reshape(b * nh * nw, s * s, c)
        y = self.attn(y).view(b, nh, nw, s, s, c).transpose(2, 3).reshape(b, nh * s, nw * s, c)
        return y[:, :h, :w].permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_conv(x + self._attend(x))
        return x + self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Stage(nn.Module):
    """``blocks`` at one resolution, then an optional ``downsample``. (B, C, H, W) -> (B, C', H', W')."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W), eps 1e-6 as in SAM's neck. Shape is kept."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class TinyViTEncoder(nn.Module):
    """LiteMedSAM's TinyViT image encoder; the defaults are LiteMedSAM's configuration (5,726,740 parameters).

    Stage 0 is convolutional (MBConv blocks, so ``num_heads[0]`` and ``window_sizes[0]`` are unused and kept only
    to mirror TinyViT's configuration); stages 1-3 are window-attention blocks. ``merge_strides[i]`` is the
    stride of the merge after stage i: LiteMedSAM does not downsample before the last stage, hence (2, 2, 1).

    Args:
        in_chans: input channels (3: LiteMedSAM repeats a grey slice into RGB).
        embed_dims, depths, num_heads, window_sizes: per stage.
        mlp_ratio: MLP hidden width / dim in the attention blocks.
        mbconv_expand_ratio: hidden width / dim in the MBConv blocks.
        local_conv_size: kernel of the depthwise conv between attention and MLP.
        merge_strides: stride of each of the ``len(depths) - 1`` patch mergings.
        out_chans: channels of the neck's output embedding.
    Inputs:
        x: (B, in_chans, H, W), float; LiteMedSAM expects 256², intensities min-max scaled to [0, 1].
    Returns:
        (B, out_chans, ⌈H/4⌉, ⌈W/4⌉): (B, 256, 64, 64) for a 256² input. Other sizes run, but the weights
        were trained at 256² only.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        merge_strides: Sequence[int] = (2, 2, 1),
        out_chans: int = 256,
    ):
        super().__init__()
        n = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == n and len(merge_strides) == n - 1):
            raise ValueError(f"need one embed_dim/num_heads/window_size per stage and one merge stride fewer, got "
                             f"{len(embed_dims)}, {len(num_heads)}, {len(window_sizes)} for {n} stages and "
                             f"{len(merge_strides)} strides")
        self.in_chans = in_chans
        d0 = embed_dims[0]
        # 1x1 convs: the "patch" embedding keeps full resolution (LiteMedSAM's change to TinyViT's stride-4 stem)
        self.patch_embed = nn.Sequential(OrderedDict(seq=nn.Sequential(
            ConvBN(in_chans, d0 // 2), nn.GELU(), ConvBN(d0 // 2, d0))))
        self.layers = nn.ModuleList()
        for i in range(n):
            dim = embed_dims[i]
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio) for _ in range(depths[i])]
            else:
                blocks = [TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                          for _ in range(depths[i])]
            merge = PatchMerging(dim, embed_dims[i + 1], merge_strides[i]) if i < n - 1 else None
            self.layers.append(Stage(blocks, merge))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
