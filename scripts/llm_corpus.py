import json
from pathlib import Path

import numpy as np

from optin.data.text import fetch_polarity_documents
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
split = snakemake.params.split
documents = fetch_polarity_documents()
need = split["calibration"] + split["heldout"]
if need > len(documents):
    raise SystemExit(f"llm.corpora.{snakemake.wildcards.corpus}.split: {need} documents asked, the corpus has {len(documents)}")
order = np.random.default_rng(split["seed"]).permutation(len(documents)).tolist()
# disjoint by construction: no document is both calibration and held-out text
indices = {"calibration": order[: split["calibration"]], "heldout": order[split["calibration"]: need], "seed": split["seed"]}
documents.to_csv(snakemake.output.documents, index=False)
Path(snakemake.output.split).write_text(json.dumps(indices) + "\n")
print(f"{len(documents)} documents: {split['calibration']} calibration, {split['heldout']} held out")
