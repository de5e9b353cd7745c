"""FCN mask head of Mask R-CNN (He et al., 2017): targets, loss, and pasting masks into the image.

Training crops each positive RoI's ground-truth mask to ``M x M`` (M = 28) with RoIAlign, as
MMDetection's ``BitmapMasks.crop_and_resize`` does. At test time the ``M x M`` probabilities are
pasted at the ORIGINAL image resolution with ``grid_sample`` (MMDetection's ``_do_paste_mask``),
using boxes in original pixels. Pasting at the resized resolution and then resizing the binary
mask (what MMDeploy's end-to-end models do) costs mask AP, so it is not done here.

Coordinates follow the half-pixel convention throughout: pixel ``i`` covers ``[i, i + 1)`` and
its centre is ``i + 0.5``, so RoIAlign(aligned=True) and grid_sample(align_corners=False) are
exact inverses up to interpolation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

# Bytes of paste buffers (sampling grid + result, 12 per pixel) per chunk on the GPU, as
# MMDetection's GPU_MEM_LIMIT bounds its chunks.
_GPU_PASTE_BYTES = 1024**3


def mask_targets(pos_rois: torch.Tensor, gt_masks: torch.Tensor, pos_gt_inds: torch.Tensor,
                 mask_size: int = 28) -> torch.Tensor:
    """``Tensor[P, mask_size, mask_size]`` {0, 1} float crops of ``gt_masks`` (see ``FCNMaskHead.get_targets``)."""
    num_pos = pos_rois.shape[0]
    if num_pos == 0:
        return pos_rois.new_zeros((0, mask_size, mask_size))
    if gt_masks.shape[0] == 0:
        raise ValueError("mask_targets: positive RoIs but no ground-truth masks")
    # RoIAlign's batch index picks the mask, so only the G masks (not P copies) become float.
    masks = gt_masks.to(device=pos_rois.device, dtype=torch.float32)[:, None]
    rois = torch.cat([pos_gt_inds.to(pos_rois.device, torch.float32)[:, None], pos_rois.float()], dim=1)
    crops = roi_align(masks, rois, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return (crops[:, 0] >= 0.5).to(pos_rois.dtype if pos_rois.is_floating_point() else torch.float32)


def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, ori_shape: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Paste ``M x M`` mask probabilities into the original image and binarise them.

    Each output pixel centre ``(x + 0.5, y + 0.5)`` is mapped into its box and the mask is
    sampled bilinearly there (zero outside the mask), so the mask's outer edge lies on the box.
    On the CPU each mask is pasted only over its box; on the GPU masks go in chunks over the
    whole image.

    Args:
        mask_probs: ``Tensor[K, M, M]`` probabilities in [0, 1].
        boxes: ``Tensor[K, 4]`` xyxy in ORIGINAL image pixels.
        ori_shape: ``(h, w)`` of the original image.
        threshold: pixels with probability ``>= threshold`` are foreground.

    Returns:
        ``bool Tensor[K, h, w]`` on ``mask_probs``' device.
    """
    h, w = int(ori_shape[0]), int(ori_shape[1])
    num = mask_probs.shape[0]
    out = torch.zeros((num, h, w), dtype=torch.bool, device=mask_probs.device)
    if num == 0 or h == 0 or w == 0:
        return out
    probs = mask_probs.float()[:, None]
    boxes = boxes.to(probs.device, torch.float32)
    if probs.device.type == "cpu":
        for i in range(num):
            x0, y0 = (boxes[i, :2].floor() - 1).clamp(min=0).int().tolist()
            x1 = int(min(float(boxes[i, 2].ceil()) + 1, w))
            y1 = int(min(float(boxes[i, 3].ceil()) + 1, h))
            if x1 > x0 and y1 > y0:
                pasted = _paste(probs[i:i + 1], boxes[i:i + 1], x0, y0, x1, y1)
                out[i, y0:y1, x0:x1] = pasted[0] >= threshold
        return out
    chunk = max(1, min(num, _GPU_PASTE_BYTES // (12 * h * w)))
    for start in range(0, num, chunk):
        sl = slice(start, start + chunk)
        out[sl] = _paste(probs[sl], boxes[sl], 0, 0, w, h) >= threshold
    return out


def _paste(probs: torch.Tensor, boxes: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """Sample ``[N, 1, M, M]`` masks at the pixel centres of ``[x0, x1) x [y0, y1)`` -> ``[N, y1 - y0, x1 - x0]``."""
    bx0, by0, bx1, by1 = boxes.split(1, dim=1)  # each [N, 1]
    # A zero-sized box would divide by zero (NaN grid); a tiny size maps the pixels off the mask.
    bw = (bx1 - bx0).clamp(min=1e-6)
    bh = (by1 - by0).clamp(min=1e-6)
    xs = torch.arange(x0, x1, device=probs.device, dtype=torch.float32) + 0.5
    ys = torch.arange(y0, y1, device=probs.device, dtype=torch.float32) + 0.5
    gx = (xs[None] - bx0) / bw * 2 - 1  # [N, W']
    gy = (ys[None] - by0) / bh * 2 - 1  # [N, H']
    n = probs.shape[0]
    grid = torch.stack([gx[:, None, :].expand(n, gy.shape[1], gx.shape[1]),
                        gy[:, :, None].expand(n, gy.shape[1], gx.shape[1])], dim=3)
    return F.grid_sample(probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


class FCNMaskHead(nn.Module):
    """``num_convs`` x (3x3 conv + ReLU), 2x2 stride-2 deconv + ReLU, 1x1 conv to class logits.

    Args:
        num_classes: C foreground classes.
        in_channels: channels of the RoI features.
        conv_out_channels: channels of the convs and the deconv.
        num_convs: 3x3 convs before the upsampling.
        roi_feat_size: S, side of the RoI features; masks are predicted at ``2 * S``.
        class_agnostic: predict one mask per RoI instead of one per class.
        loss_weight: factor on ``loss_mask``.

    Shapes: ``forward`` takes ``[R, in_channels, S, S]`` and returns logits ``[R, C', 2S, 2S]``
    with ``C' = 1`` when class-agnostic, else ``C``.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, conv_out_channels: int = 256, num_convs: int = 4,
                 roi_feat_size: int = 14, class_agnostic: bool = False, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.roi_feat_size = roi_feat_size
        self.mask_size = 2 * roi_feat_size
        self.class_agnostic = class_agnostic
        self.loss_weight = loss_weight
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3, padding=1),
                       nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        deconv_in = conv_out_channels if num_convs > 0 else in_channels
        self.upsample = nn.ConvTranspose2d(deconv_in, conv_out_channels, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.conv_logits = nn.Conv2d(conv_out_channels, 1 if class_agnostic else num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, roi_feats: torch.Tensor) -> torch.Tensor:
        """``[R, in_channels, S, S]`` RoI features -> ``[R, C', 2S, 2S]`` mask logits."""
        return self.conv_logits(self.relu(self.upsample(self.convs(roi_feats))))

    def get_targets(self, pos_rois: torch.Tensor, gt_masks: torch.Tensor, pos_gt_inds: torch.Tensor,
                    mask_size: int | None = None) -> torch.Tensor:
        """Binary mask targets of one image's positive RoIs.

        Each positive's ground-truth mask is cropped to its RoI and resized to ``M x M`` by
        RoIAlign (aligned, adaptive sampling) on the float mask, then thresholded at 0.5.

        Args:
            pos_rois: ``Tensor[P, 4]`` xyxy in the pixels of ``gt_masks`` (resized image).
            gt_masks: ``uint8 Tensor[G, H, W]`` the image's instance masks (``target["masks"]``).
            pos_gt_inds: ``Tensor[P]`` int64 index into ``gt_masks`` of each positive.
            mask_size: M; defaults to the head's output size ``2 * roi_feat_size``.

        Returns:
            ``Tensor[P, M, M]`` float in {0, 1}, on ``pos_rois``' device.
        """
        size = self.mask_size if mask_size is None else mask_size
        return mask_targets(pos_rois, gt_masks, pos_gt_inds, size)

    def loss(self, mask_logits: torch.Tensor, mask_targets: torch.Tensor,
             pos_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Binary cross-entropy on the channel of each positive's class (channel 0 if agnostic).

        Args:
            mask_logits: ``Tensor[P, C', M, M]`` from ``forward`` on the positive RoIs.
            mask_targets: ``Tensor[P, M, M]`` from ``get_targets`` (concatenated over images).
            pos_labels: ``Tensor[P]`` int64 labels in ``[0, C)``.

        Returns:
            ``{"loss_mask": scalar}``: mean over RoIs and pixels, times ``loss_weight``; with no
            positives a zero that is still connected to the graph.
        """
        if mask_logits.shape[0] == 0:
            return {"loss_mask": mask_logits.sum() * 0}
        logits = self._select(mask_logits, pos_labels)
        loss = F.binary_cross_entropy_with_logits(logits, mask_targets.to(logits.dtype), reduction="mean")
        return {"loss_mask": self.loss_weight * loss}

    def predict_masks(self, mask_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[K, C', M, M]`` logits and ``[K]`` labels -> ``[K, M, M]`` probabilities of each label."""
        return self._select(mask_logits, labels).sigmoid()

    paste_masks = staticmethod(paste_masks)  # the module function, reachable from the head

    def _select(self, mask_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.class_agnostic:
            return mask_logits[:, 0]
        return mask_logits[torch.arange(mask_logits.shape[0], device=mask_logits.device), labels.long()]
