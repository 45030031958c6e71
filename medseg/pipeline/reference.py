"""Print the pipeline file reference: ``python -m medseg.pipeline.reference > docs/...``."""

from medseg.pipeline.config import reference_markdown

if __name__ == "__main__":
    print(reference_markdown(), end="")
