"""The typed config tree. Every YAML key maps to a field here; anything else is rejected.

Classes are frozen dataclasses with defaults following MMDetection's COCO settings (each default
written once, here); the fast synthetic configs override them. Unions of dataclasses are told
apart by their ``type`` field. Values are range-checked when a section is built
(``schema.common``). Models never see these objects: ``dettool.trainer.builder`` maps them to
typed constructors.

One module per component family; this package re-exports every class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dettool.config.schema.backbones import (
    BackboneConfig,
    ContextBlockPluginConfig,
    DCNPluginConfig,
    GeneralizedAttentionPluginConfig,
    HRNetConfig,
    HRNetStageConfig,
    PluginConfig,
    ResNetConfig,
    RootResNetConfig,
    SSDVGGConfig,
)
from dettool.config.schema.common import Invalid, Range, Section
from dettool.config.schema.data import (
    DEFAULT_TRAIN_PIPELINE,
    TEST_PIPELINE,
    DataConfig,
    ExpandConfig,
    MinIoURandomCropConfig,
    NormalizeConfig,
    PadConfig,
    PhotoMetricDistortionConfig,
    RandomFlipConfig,
    ResizeConfig,
    SplitConfig,
    SynthConfig,
    TransformConfig,
)
from dettool.config.schema.dense_heads import (
    DenseHeadConfig,
    FCOSHeadConfig,
    FSAFHeadConfig,
    GARetinaHeadConfig,
    GARPNHeadConfig,
    ProposalConfig,
    ProposalHeadConfig,
    RetinaHeadConfig,
    RPNHeadConfig,
    SSDHeadConfig,
)
from dettool.config.schema.detectors import ModelConfig, RPNConfig, SingleStageConfig, TwoStageConfig
from dettool.config.schema.losses import (
    BalancedL1LossConfig,
    BCELossConfig,
    BoundedIoULossConfig,
    BoxLossConfig,
    ClsLossConfig,
    CrossEntropyLossConfig,
    FocalLossConfig,
    GHMCLossConfig,
    GHMRLossConfig,
    GIoULossConfig,
    IoULossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
)
from dettool.config.schema.necks import (
    BFPConfig,
    FPNConfig,
    HRFPNConfig,
    MLFPNConfig,
    NeckConfig,
    NeckSpec,
    SSDNeckConfig,
)
from dettool.config.schema.roi_heads import (
    BBoxHeadConfig,
    CascadeRoIHeadConfig,
    CascadeStageConfig,
    ConvFCBBoxHeadConfig,
    DoubleConvFCBBoxHeadConfig,
    DoubleHeadRoIHeadConfig,
    GridHeadConfig,
    GridRoIHeadConfig,
    HTCRoIHeadConfig,
    MaskHeadConfig,
    MaskIoUHeadConfig,
    MaskScoringRoIHeadConfig,
    RFCNRoIHeadConfig,
    RoIExtractorConfig,
    RoIHeadConfig,
    SemanticHeadConfig,
    StandardRoIHeadConfig,
)
from dettool.config.schema.task_modules import (
    AnchorConfig,
    AnchorGeneratorConfig,
    ApproxMaxIoUAssignerConfig,
    AssignerConfig,
    CenterRegionAssignerConfig,
    CoderConfig,
    DeltaCoderConfig,
    DenseSamplerConfig,
    IoUBalancedSamplerConfig,
    MaxIoUAssignerConfig,
    OHEMSamplerConfig,
    PseudoSamplerConfig,
    RandomSamplerConfig,
    RoISamplerConfig,
    SSDAnchorConfig,
    TBLRCoderConfig,
)
from dettool.config.schema.training import DeployConfig, HookConfig, LrConfig, OptimizerConfig, TestConfig, TrainConfig


@dataclass(frozen=True)
class Config(Section):
    """Root of a dettool config file."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    work_dir: str = ""
    source: str = ""


__all__ = [
    "DEFAULT_TRAIN_PIPELINE", "ExpandConfig", "MinIoURandomCropConfig", "NormalizeConfig", "PadConfig",
    "PhotoMetricDistortionConfig", "RandomFlipConfig", "ResizeConfig", "TEST_PIPELINE", "TransformConfig",
    "AnchorConfig", "AssignerConfig", "BBoxHeadConfig", "BCELossConfig", "BFPConfig", "BackboneConfig",
    "BalancedL1LossConfig", "BoxLossConfig",
    "CascadeRoIHeadConfig", "CascadeStageConfig", "ClsLossConfig", "CoderConfig", "Config", "ConvFCBBoxHeadConfig",
    "CrossEntropyLossConfig", "DCNPluginConfig", "DataConfig", "DeltaCoderConfig", "DenseHeadConfig",
    "DenseSamplerConfig", "DeployConfig", "DoubleConvFCBBoxHeadConfig", "DoubleHeadRoIHeadConfig", "FCOSHeadConfig",
    "FPNConfig", "FocalLossConfig", "GHMCLossConfig", "GHMRLossConfig", "GIoULossConfig", "HookConfig", "Invalid",
    "IoULossConfig", "L1LossConfig", "LrConfig", "MaskHeadConfig", "MaxIoUAssignerConfig", "ModelConfig",
    "NeckConfig", "NeckSpec", "OHEMSamplerConfig", "OptimizerConfig", "PluginConfig", "ProposalConfig",
    "PseudoSamplerConfig", "RPNConfig", "RPNHeadConfig", "RandomSamplerConfig", "Range", "ResNetConfig",
    "RetinaHeadConfig", "RoIExtractorConfig", "RoIHeadConfig", "RoISamplerConfig", "Section", "SingleStageConfig",
    "SSDNeckConfig", "SSDVGGConfig", "SmoothL1LossConfig", "SplitConfig", "StandardRoIHeadConfig", "SynthConfig",
    "TestConfig", "TrainConfig",
    "TwoStageConfig", "AnchorGeneratorConfig", "SSDAnchorConfig", "SSDHeadConfig",
    "CenterRegionAssignerConfig", "FSAFHeadConfig", "TBLRCoderConfig",
    "ApproxMaxIoUAssignerConfig", "BoundedIoULossConfig", "GARetinaHeadConfig",
    "RootResNetConfig", "MLFPNConfig", "RFCNRoIHeadConfig", "IoUBalancedSamplerConfig", "GARPNHeadConfig",
    "ProposalHeadConfig", "MaskIoUHeadConfig", "MaskScoringRoIHeadConfig", "GridHeadConfig", "GridRoIHeadConfig",
    "HTCRoIHeadConfig", "SemanticHeadConfig",
    "ContextBlockPluginConfig", "GeneralizedAttentionPluginConfig",
    "HRNetConfig", "HRNetStageConfig", "HRFPNConfig",
]
