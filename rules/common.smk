from pathlib import Path

from snakemake.utils import validate

from optin.config import CALIBRATION_DRAWS, budget_label, check
from optin.methods import OptinMethod

validate(config, schema="../workflow/schemas/config.schema.yaml")
check(config, base_dir=Path(workflow.basedir).parent)

RUN = config["run"]
BUDGETS = [budget_label(b) for b in RUN["budgets"]]
CALIB = config["calibration"]


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",
    method=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    n=r"\d+",
    layer=r"\d+",
    budget=r"\d\.\d{3}",


def method_settings(method):
    return OptinMethod.from_config(config["methods"][method]).settings()


def experiment_of(model, dataset):
    for exp in config["experiments"].values():
        if exp["model"] == model and exp["dataset"] == dataset:
            return exp
    raise ValueError(f"no experiment pairs model {model!r} with dataset {dataset!r}")


def run_pairs():
    return [(config["experiments"][e]["model"], config["experiments"][e]["dataset"]) for e in RUN["experiments"]]


def checkpoint_dir(model):
    return f"results/models/{model}/checkpoint"


def model_info(model):
    return f"results/models/{model}/model_info.json"


def finetune_max_length(model):
    finetune = config["models"][model].get("finetune")
    return config["datasets"][finetune["dataset"]]["max_length"] if finetune else None


def dataset_files(dataset):
    return multiext(f"results/data/{dataset}/", "sentences.csv", "split.json")


def eval_files():
    return [
        f"results/eval/{m}/{d}/{method}/calib{CALIB['n']}-seed{seed}/budget{b}.json"
        for m, d in run_pairs()
        for method in RUN["methods"]
        for seed in RUN["seeds"]
        for b in BUDGETS
    ]


def prepare_inputs(w):
    model = config["models"][w.model]
    inputs = {}
    if model.get("finetune"):
        inputs["data"] = dataset_files(model["finetune"]["dataset"])
    if model["source"]["kind"] == "hub":
        inputs["hub"] = f"results/hub/{w.model}"
    return inputs
