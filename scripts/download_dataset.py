from pathlib import Path

from optin.data.text import fetch_rt_polarity, make_split, read_local_csv, write_dataset
from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)
source, split = snakemake.params.source, snakemake.params.split
out_dir = Path(snakemake.output.sentences).parent
if source["kind"] == "rt_polarity":
    frame = fetch_rt_polarity()
else:
    frame = read_local_csv(Path(source["path"]))
indices = make_split(len(frame), split["train"], split["test"], split["calib_pool"], split["seed"])
write_dataset(frame, indices, out_dir)
print(f"{len(frame)} rows; train {len(indices['train'])}, test {len(indices['test'])}, calibration pool {len(indices['calib_pool'])}")
