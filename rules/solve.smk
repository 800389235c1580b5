rule solve:
    input:
        scores="results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
        info=lambda w: model_info(w.model),
    output:
        "results/masks/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
    params:
        budget=lambda w: float(w.budget),
        mac_seq_len=lambda w: experiment_of(w.model, w.dataset)["mac_seq_len"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/solve/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/solve/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tsv"
    localrule: True
    script:
        "../scripts/solve.py"
