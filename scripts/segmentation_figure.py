from pathlib import Path

from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1)

import json  # noqa: E402

from optin.workflow import plots  # noqa: E402
from optin.data.segmentation import open_segmentation_split  # noqa: E402
from optin.models import segmentation  # noqa: E402

params = snakemake.params
split_file, source_file = snakemake.input.data
test = open_segmentation_split(split_file, source_file, "test", snakemake.input.checkpoint)
rows = list(range(params.examples))
dense = segmentation.load_segmenter(snakemake.input.checkpoint)
slim = segmentation.load_segmenter(snakemake.input.slim)
metrics = json.loads(Path(snakemake.input.metrics).read_text())
images = test.images[rows] if test.images is not None else test.pixels(rows).permute(0, 2, 3, 1).numpy()
plots.segmentation_examples(
    images, test.masks[rows], segmentation.predict(dense, test, rows), segmentation.predict(slim, test, rows),
    test.class_names, Path(snakemake.output.png).with_suffix(""),
    f"{params.experiment}: held-out test images, unpruned (mIoU {metrics['unpruned_miou']:.3f}) vs OPTIN at "
    f"{metrics['relative_macs']:.2f} of the backbone MACs (mIoU {metrics['miou']:.3f})",
    pruned_label=f"pruned ({metrics['relative_macs']:.2f} MACs)")
