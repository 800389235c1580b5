from pathlib import Path

from snakemake.utils import validate

from optin.config import budget_label, calibration_draws, check

validate(config, schema="../workflow/schemas/config.schema.yaml")
check(config, base_dir=Path(workflow.basedir).parent)

RUN = config["run"]
BUDGETS = [budget_label(b) for b in RUN["budgets"]]
CALIB = config["calibration"]
CALIB_DRAWS = calibration_draws({m: config["methods"][m] for m in RUN["methods"]})


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",
    method=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    n=r"\d+",
    layer=r"\d+",
    budget=r"\d\.\d{3}",


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


def dataset_files(dataset):
    return multiext(f"results/data/{dataset}/", "sentences.csv", "split.json")


RUN_DIR = "{model}/{dataset}/{method}/calib{n}-seed{seed}"


def eval_files():
    return [
        f"results/eval/{m}/{d}/{method}/calib{CALIB['n']}-seed{seed}/budget{b}.json"
        for m, d in run_pairs()
        for method in RUN["methods"]
        for seed in RUN["seeds"]
        for b in BUDGETS
    ]
