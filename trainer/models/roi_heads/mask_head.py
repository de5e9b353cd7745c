"""FCN mask head of Mask R-CNN (He et al., 2017): targets and loss.

Training crops each positive RoI's ground-truth mask to ``M x M`` (M = 28) with RoIAlign, as
MMDetection's ``BitmapMasks.crop_and_resize`` does. At test time the ``M x M`` probabilities are
pasted at the ORIGINAL image resolution by ``dettool.structures.mask_paste``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


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


class FCNMaskHead(nn.Module):
    """``num_convs`` x (3x3 conv [+ GN] + ReLU), 2x2 stride-2 deconv + ReLU, 1x1 conv to class logits.

    Args:
        num_classes: C foreground classes.
        in_channels: channels of the RoI features.
        conv_out_channels: channels of the convs and the deconv.
        num_convs: 3x3 convs before the upsampling.
        norm: ``'none'``, ``'gn'`` (GroupNorm, 32 groups) or ``'bn'`` (BatchNorm, torchvision's v2
            mask head) after each 3x3 conv, which then has no bias.
        roi_feat_size: S, side of the RoI features; masks are predicted at ``2 * S``.
        class_agnostic: predict one mask per RoI instead of one per class.
        loss_weight: factor on ``loss_mask``.

    Shapes: ``forward`` takes ``[R, in_channels, S, S]`` and returns logits ``[R, C', 2S, 2S]``
    with ``C' = 1`` when class-agnostic, else ``C``.
    """

    def __init__(self, *, num_classes: int, in_channels: int, conv_out_channels: int, num_convs: int, norm: str,
                 roi_feat_size: int, class_agnostic: bool, loss_weight: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.roi_feat_size = roi_feat_size
        self.mask_size = 2 * roi_feat_size
        self.class_agnostic = class_agnostic
        self.loss_weight = loss_weight
        if norm not in ("none", "gn", "bn"):
            raise ValueError(f"FCNMaskHead norm must be 'none', 'gn' or 'bn', got {norm!r}")
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers.append(nn.Conv2d(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3, padding=1,
                                    bias=norm == "none"))
            if norm == "gn":
                layers.append(nn.GroupNorm(32, conv_out_channels))
            elif norm == "bn":
                layers.append(nn.BatchNorm2d(conv_out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*layers)
        deconv_in = conv_out_channels if num_convs > 0 else in_channels
        self.upsample = nn.ConvTranspose2d(deconv_in, conv_out_channels, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.conv_logits = nn.Conv2d(conv_out_channels, 1 if class_agnostic else num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
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
        logits = self.label_logits(mask_logits, pos_labels)
        loss = F.binary_cross_entropy_with_logits(logits, mask_targets.to(logits.dtype), reduction="mean")
        return {"loss_mask": self.loss_weight * loss}

    def predict_masks(self, mask_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[K, C', M, M]`` logits and ``[K]`` labels -> ``[K, M, M]`` probabilities of each label."""
        return self.label_logits(mask_logits, labels).sigmoid()

    def label_logits(self, mask_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[K, C', M, M]`` logits and ``[K]`` labels -> ``[K, M, M]`` logits of each label."""
        if self.class_agnostic:
            return mask_logits[:, 0]
        return mask_logits[torch.arange(mask_logits.shape[0], device=mask_logits.device), labels.long()]
