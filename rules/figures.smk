FIGURES = expand(
    "results/figures/{name}.{ext}",
    name=["accuracy_vs_flops", "speedup_vs_flops", "delta_accuracy_vs_flops", "delta_top1_vs_flops"],
    ext=["png", "pdf"],
)
FIGURES += expand(
    "results/figures/units/{pair}/{name}.{ext}",
    pair=[f"{m}/{d}" for m, d in run_pairs()],
    name=["kept_units", "importance"],
    ext=["png", "pdf"],
)
if segmentation_experiments():
    FIGURES += expand("results/figures/miou_vs_flops.{ext}", ext=["png", "pdf"])
    FIGURES += expand(
        "results/figures/segmentation_qualitative_{model}.{ext}",
        model=[m for m, _ in segmentation_experiments()],
        ext=["png", "pdf"],
    )
if cnn_experiments():
    FIGURES += expand("results/figures/cnn_accuracy_vs_flops.{ext}", ext=["png", "pdf"])
FIGURES += expand("results/figures/{name}.{ext}", name=["method_comparison", "scoring_cost", "accuracy_vs_speedup"],
                  ext=["png", "pdf"])
FIGURES += expand("results/figures/sweeps/{sweep}.{ext}", sweep=list(config.get("sweeps", {})), ext=["png", "pdf"])


rule figures:
    input:
        "results/tables/metrics.csv",
    output:
        accuracy_png=report(
            "results/figures/accuracy_vs_flops.png",
            caption="../workflow/report/accuracy_vs_flops.rst",
            category="Text arm",
        ),
        accuracy_pdf="results/figures/accuracy_vs_flops.pdf",
        speedup_png=report(
            "results/figures/speedup_vs_flops.png",
            caption="../workflow/report/speedup_vs_flops.rst",
            category="Text arm",
        ),
        speedup_pdf="results/figures/speedup_vs_flops.pdf",
        delta_top1_png=report(
            "results/figures/delta_top1_vs_flops.png",
            caption="../workflow/report/delta_top1_vs_flops.rst",
            category="Vision arm",
        ),
        delta_top1_pdf="results/figures/delta_top1_vs_flops.pdf",
        delta_accuracy_png=report(
            "results/figures/delta_accuracy_vs_flops.png",
            caption="../workflow/report/delta_accuracy_vs_flops.rst",
            category="Text arm",
        ),
        delta_accuracy_pdf="results/figures/delta_accuracy_vs_flops.pdf",
    params:
        vision_references=published_references("Vision arm"),
        text_references=published_references("Text arm"),
        cnn_experiments=cnn_experiments(),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/figures/figures.log",
    benchmark:
        "benchmarks/figures/figures.tsv"
    localrule: True
    script:
        "../scripts/figures.py"


rule segmentation_curves:
    input:
        "results/tables/metrics.csv",
    output:
        png=report(
            "results/figures/miou_vs_flops.png",
            caption="../workflow/report/miou_vs_flops.rst",
            category="Segmentation arm",
        ),
        pdf="results/figures/miou_vs_flops.pdf",
    conda:
        "../envs/optin.yaml"
    log:
        "logs/segmentation_curves/segmentation_curves.log",
    benchmark:
        "benchmarks/segmentation_curves/segmentation_curves.tsv"
    localrule: True
    script:
        "../scripts/segmentation_curves.py"


rule segmentation_figure:
    # The paper's qualitative pair on held-out images: ground truth, unpruned and pruned predictions.
    input:
        unpack(qualitative_inputs),
    output:
        png=report(
            "results/figures/segmentation_qualitative_{model}.png",
            caption="../workflow/report/segmentation_qualitative.rst",
            category="Segmentation arm",
        ),
        pdf="results/figures/segmentation_qualitative_{model}.pdf",
    params:
        examples=4,
        experiment=lambda w: w.model,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/segmentation_figure/{model}.log",
    benchmark:
        "benchmarks/segmentation_figure/{model}.tsv"
    localrule: True
    script:
        "../scripts/segmentation_figure.py"


rule cnn_curves:
    input:
        "results/tables/metrics.csv",
    output:
        png=report(
            "results/figures/cnn_accuracy_vs_flops.png",
            caption="../workflow/report/cnn_accuracy_vs_flops.rst",
            category="CNN arm",
        ),
        pdf="results/figures/cnn_accuracy_vs_flops.pdf",
    params:
        experiments=cnn_experiments(),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/cnn_curves/cnn_curves.log",
    benchmark:
        "benchmarks/cnn_curves/cnn_curves.tsv"
    localrule: True
    script:
        "../scripts/cnn_curves.py"


rule method_tables:
    # Methods side by side: accuracy per budget (mean ± std over seeds) as CSV and Markdown, and the
    # scoring stage's cost per method from the scoring jobs' own benchmark files.
    input:
        metrics="results/tables/metrics.csv",
        benchmarks=sorted({b for job in scoring_jobs() for b in job["benchmarks"]}),
        scores=sorted({job["scores"] for job in scoring_jobs()}),
    output:
        methods_csv=report("results/tables/methods.csv", caption="../workflow/report/methods_table.rst", category="Methods"),
        methods_md="results/tables/methods.md",
        cost_csv=report("results/tables/scoring_cost.csv", caption="../workflow/report/scoring_cost.rst", category="Methods"),
        comparison_png=report(
            "results/figures/method_comparison.png",
            caption="../workflow/report/method_comparison.rst",
            category="Methods",
        ),
        comparison_pdf="results/figures/method_comparison.pdf",
        cost_png=report("results/figures/scoring_cost.png", caption="../workflow/report/scoring_cost.rst", category="Methods"),
        cost_pdf="results/figures/scoring_cost.pdf",
        speedup_png=report(
            "results/figures/accuracy_vs_speedup.png",
            caption="../workflow/report/accuracy_vs_speedup.rst",
            category="Methods",
        ),
        speedup_pdf="results/figures/accuracy_vs_speedup.pdf",
    params:
        jobs=scoring_jobs(),
        experiments=[f"{m}/{d}" for m, d in run_pairs() if not is_segmentation_dataset(d)],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/method_tables/method_tables.log",
    benchmark:
        "benchmarks/method_tables/method_tables.tsv"
    localrule: True
    script:
        "../scripts/method_tables.py"


rule unit_figures:
    # What the search kept (heat maps of units per layer and budget, every method) and the scores
    # it ranked (importance per layer), per experiment.
    input:
        unpack(unit_figure_inputs),
    output:
        kept_png=report(
            "results/figures/units/{model}/{dataset}/kept_units.png",
            caption="../workflow/report/kept_units.rst",
            category=lambda w: arm_of(w.model, w.dataset),
            subcategory="Units kept per layer",
        ),
        kept_pdf="results/figures/units/{model}/{dataset}/kept_units.pdf",
        importance_png=report(
            "results/figures/units/{model}/{dataset}/importance.png",
            caption="../workflow/report/importance.rst",
            category=lambda w: arm_of(w.model, w.dataset),
            subcategory="Importance per layer",
        ),
        importance_pdf="results/figures/units/{model}/{dataset}/importance.pdf",
    params:
        num_layers=lambda w: config["models"][w.model]["num_layers"],
        mask_methods=unit_figure_mask_methods,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/unit_figures/{model}/{dataset}.log",
    benchmark:
        "benchmarks/unit_figures/{model}/{dataset}.tsv"
    localrule: True
    script:
        "../scripts/unit_figures.py"


rule sweep_figure:
    # One knob varied on one experiment (config key sweeps, optin.workflow.sweeps): accuracy at fixed
    # budgets against the swept value, and the table behind it.
    wildcard_constraints:
        sweep=name_pattern(list(config.get("sweeps", {}))),
    input:
        evals=sweep_eval_files,
    output:
        png=report("results/figures/sweeps/{sweep}.png", caption="../workflow/report/sweep.rst", category="Sweeps"),
        pdf="results/figures/sweeps/{sweep}.pdf",
        csv="results/tables/sweeps/{sweep}.csv",
    params:
        runs=lambda w: as_dicts(sweep_runs(config, w.sweep)),
        axis=lambda w: config["sweeps"][w.sweep]["axis"],
        title=lambda w: config["sweeps"][w.sweep].get("title", f"{config['sweeps'][w.sweep]['experiment']}: {w.sweep}"),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/sweep_figure/{sweep}.log",
    benchmark:
        "benchmarks/sweep_figure/{sweep}.tsv"
    localrule: True
    script:
        "../scripts/sweep_figure.py"
