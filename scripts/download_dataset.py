import hashlib
import json
from pathlib import Path

from optin.data.text import GLUE_REPO, fetch_glue, fetch_rt_polarity, glue_dataset, make_split, read_local_csv, write_dataset
from optin.data.hub import NotInCache
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)
source, split = snakemake.params.source, snakemake.params.split
out_dir = Path(snakemake.output.sentences).parent
provenance = {"source": source}
if source["kind"] == "glue":
    try:
        train, dev, commit = fetch_glue(source["task"], source["revision"])
    except NotInCache as err:
        raise SystemExit(f"datasets.{snakemake.wildcards.dataset}.source: {err}") from None
    frame, indices = glue_dataset(train, dev, split["train"], split["test"], split["calib_pool"], split["seed"])
    # GLUE's hub files carry no checksums of their own: the commit fetched and the rows written are recorded.
    provenance.update({"repo": GLUE_REPO, "resolved_commit": commit,
                       "glue_train_rows": len(train), "glue_dev_rows": len(dev)})
    print(f"GLUE {source['task']}@{source['revision']}: {len(train)} train rows, {len(dev)} dev rows")
else:
    frame = fetch_rt_polarity() if source["kind"] == "rt_polarity" else read_local_csv(Path(source["path"]))
    indices = make_split(len(frame), split["train"], split["test"], split["calib_pool"], split["seed"])
write_dataset(frame, indices, out_dir)
provenance["sentences_sha256"] = hashlib.sha256(Path(snakemake.output.sentences).read_bytes()).hexdigest()
Path(snakemake.output.source).write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
print(f"{len(frame)} rows; train {len(indices['train'])}, test {len(indices['test'])}, calibration pool {len(indices['calib_pool'])}")
