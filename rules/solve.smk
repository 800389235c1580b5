rule solve:
    input:
        scores=lambda w: f"results/scores/{w.model}/{w.dataset}/{scores_method(w.method)}/calib{w.n}-seed{w.seed}/scores.parquet",
        info=lambda w: model_info(w.model),
    output:
        "results/masks/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
    params:
        budget=lambda w: float(w.budget),
        method=lambda w: method_settings(w.method),
        seed=lambda w: int(w.seed),
        mac_seq_len=lambda w: experiment_of(w.model, w.dataset).get("mac_seq_len", "auto"),
        image_size=lambda w: config["datasets"][w.dataset].get("image_size"),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/solve/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/solve/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tsv"
    localrule: True
    script:
        "../scripts/solve.py"
