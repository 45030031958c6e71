"""Pipelines: typed pipeline files, the stages, and run folders that skip, resume and
invalidate stages."""

from pathlib import Path

from medseg.core.errors import ConfigError
from medseg.pipeline.config import PipelineConfig, load_config
from medseg.pipeline.pipeline import PipelineRun, format_dice, read_summary, run_pipeline
from medseg.pipeline.runner import Stage, StageContext, StageOutcome, StageResult, run_stages
from medseg.pipeline.stages import STAGE_NAMES, standard_stages

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def demo_pipeline_file() -> Path:
    """``pipelines/demo.yaml`` of the source checkout medseg runs from."""
    path = SOURCE_ROOT / "pipelines" / "demo.yaml"
    if not path.is_file():
        raise ConfigError("the demo pipeline is not there; `medseg demo` needs a source "
                          "checkout (git clone + make demo)", path)
    return path


__all__ = [
    "STAGE_NAMES",
    "PipelineConfig",
    "PipelineRun",
    "Stage",
    "StageContext",
    "StageOutcome",
    "StageResult",
    "demo_pipeline_file",
    "format_dice",
    "load_config",
    "read_summary",
    "run_pipeline",
    "run_stages",
    "standard_stages",
]
