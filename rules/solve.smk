rule solve:
    input:
        scores="results/scores/" + RUN_DIR + "/scores.parquet",
        info=lambda w: model_info(w.model),
    output:
        "results/masks/" + RUN_DIR + "/budget{budget}.json",
    params:
        budget=lambda w: float(w.budget),
        mac_seq_len=lambda w: experiment_of(w.model, w.dataset)["mac_seq_len"],
    log:
        "logs/solve/" + RUN_DIR + "/budget{budget}.log",
    benchmark:
        "benchmarks/solve/" + RUN_DIR + "/budget{budget}.tsv"
    localrule: True
    script:
        "../scripts/solve.py"
