rule download_dataset:
    output:
        sentences="results/data/{dataset}/sentences.csv",
        split="results/data/{dataset}/split.json",
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
