"""RoI feature extractors: pool a fixed-size feature per region from the FPN levels."""

from dettool.trainer.models.roi_extractors.multi_level_roi_align import MultiLevelRoIAlign, map_roi_levels

__all__ = ["MultiLevelRoIAlign", "map_roi_levels"]
