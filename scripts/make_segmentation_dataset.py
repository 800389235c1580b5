from pathlib import Path

from optin.data import segmentation
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1)
source, split = snakemake.params.source, snakemake.params.split
repository = Path(snakemake.params.repository)  # relative paths are relative to the repository
split_file, source_file = Path(snakemake.output.split), Path(snakemake.output.source)
if source["kind"] == "fashion_mnist_canvases":
    segmentation.write_canvas_split(source, split, repository, split_file, source_file)
else:
    root = Path(source["root"]) if Path(source["root"]).is_absolute() else repository / source["root"]
    try:
        segmentation.write_cityscapes_split(root, split, split_file, source_file)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"datasets.{snakemake.wildcards.dataset}.source.root: {err}") from None
print(f"{source['kind']}: wrote {split_file}")
