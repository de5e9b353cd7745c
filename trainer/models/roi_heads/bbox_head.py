"""Box heads of two-stage detectors: what they share (``BBoxHead``) and the conv + FC head
(MMDetection v2's ``ConvFCBBoxHead``).

Contract: ``forward(roi_feats) -> (cls_score, bbox_pred)`` (exportable raw tensors),
``get_targets`` / ``loss`` for training on sampled RoIs and ``refine_rois`` for the next stage
of a cascade; test-time decoding is ``postprocess.roi_decoders.BoxDecode`` on the head's
``bbox_coder``. Classification is a softmax over C + 1 classes with background LAST (label
``num_classes``), MMDetection v2's convention.
"""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder


class BBoxHead(nn.Module):
    """Targets, losses and RoI refinement shared by every box head; subclasses build the layers
    and ``forward``.

    Args:
        num_classes: foreground classes C (label C is background).
        reg_class_agnostic: one box per RoI instead of one per class.
        bbox_coder: delta coder (MMDetection's RoI-head stds are (0.1, 0.1, 0.2, 0.2)).
        loss_cls: softmax classification loss on logits ``[N, C + 1]``, labels ``[N]``, weights ``[N]``.
        loss_bbox: regression loss (on deltas, or on decoded boxes when its ``decoded_boxes``).
        with_reg: False for a head that only classifies (Grid R-CNN's): no regressor, its
            ``bbox_pred`` is None, no ``loss_bbox``, and its RoIs are its boxes.
    """

    def __init__(self, *, num_classes: int, reg_class_agnostic: bool, bbox_coder: DeltaXYWHCoder,
                 loss_cls: nn.Module, loss_bbox: nn.Module, with_reg: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.with_reg = with_reg
        self.reg_class_agnostic = reg_class_agnostic
        self.bbox_coder = bbox_coder
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox
        self.reg_decoded_bbox = loss_bbox.decoded_boxes

    @property
    def reg_out_channels(self) -> int:
        """Width of ``bbox_pred``: 4, or 4 per class."""
        return 4 if self.reg_class_agnostic else 4 * self.num_classes

    @staticmethod
    def init_predictors(fc_cls: nn.Module, fc_reg: nn.Module | None) -> None:
        """MMDetection's initialisation of the classifier (std 0.01) and the regressor (std 0.001),
        linear layers or 1x1 convs (R-FCN's score maps)."""
        nn.init.normal_(fc_cls.weight, std=0.01)
        nn.init.zeros_(fc_cls.bias)
        if fc_reg is not None:
            nn.init.normal_(fc_reg.weight, std=0.001)
            nn.init.zeros_(fc_reg.bias)

    # ------------------------------------------------------------------------------- targets

    def get_targets(self, pos_rois: torch.Tensor, pos_gt_boxes: torch.Tensor, pos_labels: torch.Tensor,
                    num_neg: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets of one image's sampled RoIs, positives first then ``num_neg`` negatives.

        Args:
            pos_rois: ``Tensor[P, 4]`` xyxy positive RoIs.
            pos_gt_boxes: ``Tensor[P, 4]`` their matched gt boxes.
            pos_labels: ``Tensor[P]`` their gt labels in ``[0, C)``.
            num_neg: number Q of negative RoIs following the positives.

        Returns: ``labels`` ``Tensor[P + Q]`` (negatives = C), ``label_weights`` ``Tensor[P + Q]``,
        ``bbox_targets`` ``Tensor[P + Q, 4]`` (deltas, or gt boxes when ``reg_decoded_bbox``) and
        ``bbox_weights`` ``Tensor[P + Q, 4]`` (1 on positives).
        """
        p, n = pos_rois.shape[0], pos_rois.shape[0] + num_neg
        labels = torch.full((n,), self.num_classes, dtype=torch.long, device=pos_rois.device)
        label_weights = pos_rois.new_ones(n, dtype=torch.float32)
        bbox_targets = pos_rois.new_zeros((n, 4), dtype=torch.float32)
        bbox_weights = pos_rois.new_zeros((n, 4), dtype=torch.float32)
        if p:
            labels[:p] = pos_labels
            bbox_targets[:p] = (pos_gt_boxes.float() if self.reg_decoded_bbox
                                else self.bbox_coder.encode(pos_rois, pos_gt_boxes))
            bbox_weights[:p] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights

    # ------------------------------------------------------------------------------- loss

    def _class_deltas(self, bbox_pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[R, 4]`` deltas of class ``labels`` ``[R]`` (in ``[0, C)``) from ``bbox_pred``."""
        if self.reg_class_agnostic:
            return bbox_pred
        rows = torch.arange(bbox_pred.shape[0], device=bbox_pred.device)
        return bbox_pred.view(bbox_pred.shape[0], self.num_classes, 4)[rows, labels]

    def loss(self, cls_score: torch.Tensor, bbox_pred: torch.Tensor | None, rois: torch.Tensor, labels: torch.Tensor,
             label_weights: torch.Tensor, bbox_targets: torch.Tensor,
             bbox_weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classification and regression losses over the sampled RoIs of the batch.

        Args:
            cls_score: ``Tensor[R, C + 1]``; bbox_pred: ``Tensor[R, 4]`` or ``Tensor[R, 4 * C]``.
            rois: ``Tensor[R, 5]`` ``(batch_idx, x1, y1, x2, y2)`` (decoded-box losses decode from these).
            labels, label_weights: ``Tensor[R]``; bbox_targets, bbox_weights: ``Tensor[R, 4]``
            (the concatenated :meth:`get_targets` of every image).

        Returns: ``loss_cls`` (averaged over ``sum(label_weights)``), ``loss_bbox`` (averaged over R,
        as MMDetection; none without a regressor) and ``acc`` (classification accuracy in percent,
        detached).
        """
        cls_avg = label_weights.float().sum().clamp(min=1.0)
        loss_cls = self.loss_cls(cls_score, labels, label_weights, avg_factor=cls_avg)
        with torch.no_grad():
            if labels.numel():
                acc = (cls_score.argmax(dim=1) == labels).float().mean() * 100
            else:
                acc = cls_score.new_zeros(())
        if bbox_pred is None:
            return {"loss_cls": loss_cls, "acc": acc}
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero(as_tuple=True)[0]
        if pos.numel():
            pred = self._class_deltas(bbox_pred[pos], labels[pos])
            if self.reg_decoded_bbox:
                pred = self.bbox_coder.decode(rois[pos, 1:], pred)
                loss_bbox = self.loss_bbox(pred, bbox_targets[pos], bbox_weights[pos, 0],
                                           avg_factor=float(bbox_targets.shape[0]))
            else:
                loss_bbox = self.loss_bbox(pred, bbox_targets[pos], bbox_weights[pos],
                                           avg_factor=float(bbox_targets.shape[0]))
        else:
            loss_bbox = bbox_pred.sum() * 0  # keeps the regressor in the graph
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "acc": acc}

    # ------------------------------------------------------------------------------- cascade

    def refine_rois(self, rois: torch.Tensor, labels: torch.Tensor, bbox_pred: torch.Tensor,
                    img_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """RoIs regressed by their class's deltas, for the next stage of a cascade.

        Args:
            rois: ``Tensor[R, 5]`` ``(batch_idx, x1, y1, x2, y2)``.
            labels: ``Tensor[R]`` in ``[0, C)`` whose deltas to apply (ignored when agnostic; a
                cascade replaces background labels by the argmax foreground class first).
            bbox_pred: ``Tensor[R, 4]`` or ``Tensor[R, 4 * C]``.
            img_shape: ``(h, w)`` to clip to; None does not clip.

        Returns: ``Tensor[R, 5]`` with the same batch indices.
        """
        deltas = self._class_deltas(bbox_pred, labels)
        boxes = self.bbox_coder.decode(rois[:, 1:], deltas, max_shape=img_shape)
        return torch.cat([rois[:, :1].to(boxes.dtype), boxes], dim=1)


class ConvFCBBoxHead(BBoxHead):
    """Shared convs, shared FCs, then a classifier and a box regressor.

    ``shared2fc`` (Faster R-CNN's default) is ``num_shared_convs=0, num_shared_fcs=2``;
    ``4conv1fc`` with ``norm='gn'`` is the head of the MMDetection paper's normalization study.

    Args:
        in_channels: channels of the pooled RoI features.
        roi_feat_size: side S of the pooled RoI features.
        num_shared_convs: 3x3 convs (norm, ReLU) before flattening.
        num_shared_fcs: fully connected layers (ReLU) after flattening.
        conv_out_channels: channels of the shared convs.
        fc_out_channels: width of the shared FCs.
        norm: ``'none'``, ``'gn'`` (GroupNorm, 32 groups) or ``'bn'`` (BatchNorm, torchvision's
            v2 box head) after each shared conv, which then has no bias.
        **kwargs: ``BBoxHead`` arguments.
    """

    def __init__(self, *, in_channels: int, roi_feat_size: int, num_shared_convs: int, num_shared_fcs: int,
                 conv_out_channels: int, fc_out_channels: int, norm: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if norm not in ("none", "gn", "bn"):
            raise ValueError(f"ConvFCBBoxHead norm must be 'none', 'gn' or 'bn', got {norm!r}")
        self.in_channels = in_channels
        self.roi_feat_size = roi_feat_size
        convs: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_shared_convs):
            conv = nn.Conv2d(channels, conv_out_channels, 3, padding=1, bias=norm == "none")
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            convs.append(conv)
            if norm == "gn":
                convs.append(nn.GroupNorm(min(32, conv_out_channels), conv_out_channels))
            elif norm == "bn":
                convs.append(nn.BatchNorm2d(conv_out_channels))
            convs.append(nn.ReLU(inplace=True))
            channels = conv_out_channels
        self.shared_convs = nn.Sequential(*convs)
        fcs: list[nn.Module] = []
        dim = channels * roi_feat_size * roi_feat_size
        for _ in range(num_shared_fcs):
            fc = nn.Linear(dim, fc_out_channels)
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
            fcs += [fc, nn.ReLU(inplace=True)]
            dim = fc_out_channels
        self.shared_fcs = nn.Sequential(*fcs)
        self.fc_cls = nn.Linear(dim, self.num_classes + 1)
        self.fc_reg = nn.Linear(dim, self.reg_out_channels) if self.with_reg else None
        self.init_predictors(self.fc_cls, self.fc_reg)

    # ------------------------------------------------------------------------------- forward

    def forward(self, roi_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw predictions for pooled RoI features.

        Args:
            roi_feats: ``Tensor[R, in_channels, S, S]``.

        Returns: ``cls_score`` ``Tensor[R, C + 1]`` softmax logits (background last) and
        ``bbox_pred`` ``Tensor[R, 4]`` (agnostic) or ``Tensor[R, 4 * C]`` (per class, class-major),
        None without a regressor.
        """
        x = self.shared_convs(roi_feats).flatten(1)
        x = self.shared_fcs(x)
        return self.fc_cls(x), (self.fc_reg(x) if self.fc_reg is not None else None)
