rule solve:
    input:
        scores=lambda w: f"results/scores/{w.model}/{w.dataset}/{scores_method(w.method)}/calib{w.n}-seed{w.seed}/scores.parquet",
        info=lambda w: model_info(w.model),
        latency_table=solve_latency_table,
    output:
        "results/masks/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
    params:
        budget=lambda w: float(w.budget),
        method=lambda w: method_settings(w.method),
        seed=lambda w: int(w.seed),
        mac_seq_len=lambda w: experiment_of(w.model, w.dataset).get("mac_seq_len", "auto"),
        image_size=lambda w: config["datasets"][w.dataset].get("image_size"),
        family=lambda w: config["models"][w.model]["family"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/solve/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/solve/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tsv"
    localrule: True
    script:
        "../scripts/solve.py"


rule tune_mask:
    # Kwon et al.'s mask rearrangement and least-squares mask tuning on one searched mask
    # (optin.methods.kwon), on the labelled first calibration draw.
    wildcard_constraints:
        method=methods_tuned(),
    input:
        mask="results/masks/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
        checkpoint=lambda w: checkpoint_dir(w.model),
        teacher="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/teacher.pt",
    output:
        "results/masks/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tuned.json",
    params:
        device=DEVICE,
        family=lambda w: config["models"][w.model]["family"],
        method=lambda w: method_settings(w.method),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(4000),
        runtime=20,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/tune_mask/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/tune_mask/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tsv"
    script:
        "../scripts/tune_mask.py"
