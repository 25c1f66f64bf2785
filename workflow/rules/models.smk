# Training (nets and the Ridge baselines), whole-AOI prediction (one job per shard for a
# sharded AOI, then assembled), the coarse-DEM baseline and the bias corrections.


rule train_net:
    input:
        store_embeddings=store_input("embeddings"),
        store_dsm=store_input("dsm"),
        store_coarse_dem=store_input("coarse_dem"),
        split_gpkg="results/{aoi}/split/split.gpkg",
        split_tif="results/{aoi}/split/split.tif",
    output:
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
        history="results/{aoi}/models/{model}/seed{seed}/history.csv",
    log:
        "results/{aoi}/logs/train/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/train/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS),
    # the trainings are the study's critical path: start them before the baselines' jobs
    priority: 10
    conda:
        "../../envs/train_net.yaml"
    threads: lambda w: training_threads()
    resources:
        # one GPU (common.smk, training_gpus): `--gpus=1` on SLURM (profiles/slurm), and a
        # slot of the local `gpu` resource (workflow/profiles/default: gpu=1), so GPU trainings on a
        # workstation run one at a time; none on a CPU-only machine, so they run side by side
        gpu=lambda w: training_gpus(),
    params:
        model=lambda w: section_json("models", w.model),
        settings=lambda w: section_json("training"),
        # saved after every epoch so that a rerun resumes; removed once the outputs exist
        resume="results/{aoi}/models/{model}/seed{seed}/resume.pt",
    shell:
        "python -m aefheight train-net --model {wildcards.model} --seed {wildcards.seed}"
        " --model-settings {params.model:q} --settings {params.settings:q}"
        " --store-embeddings {input.store_embeddings} --store-dsm {input.store_dsm}"
        " --store-coarse-dem {input.store_coarse_dem}"
        " --split-gpkg {input.split_gpkg} --split-tif {input.split_tif}"
        " --checkpoint {output.checkpoint} --history {output.history} --resume {params.resume}"
        " --threads {threads} > {log} 2>&1"


rule train_ridge:
    input:
        store_embeddings=store_input("embeddings"),
        store_dsm=store_input("dsm"),
        split_gpkg="results/{aoi}/split/split.gpkg",
        split_tif="results/{aoi}/split/split.tif",
    output:
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
        history="results/{aoi}/models/{model}/seed{seed}/history.csv",
    log:
        "results/{aoi}/logs/train/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/train/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(RIDGES),
    conda:
        "../../envs/train_ridge.yaml"
    threads: 1
    params:
        model=lambda w: section_json("models", w.model),
    shell:
        "python -m aefheight train-ridge --model {wildcards.model} --seed {wildcards.seed}"
        " --model-settings {params.model:q}"
        " --store-embeddings {input.store_embeddings} --store-dsm {input.store_dsm}"
        " --split-gpkg {input.split_gpkg} --split-tif {input.split_tif}"
        " --checkpoint {output.checkpoint} --history {output.history} > {log} 2>&1"


rule predict:
    input:
        unpack(coarse_dem_input),
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
    output:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS + RIDGES),
        aoi=one_of(UNSHARDED),
    conda:
        "../../envs/predict.yaml"
    threads: 2
    params:
        settings=lambda w: section_json("prediction"),
        optional=optional_flags(coarse_dem_input),
    shell:
        "python -m aefheight predict --settings {params.settings:q} --model {wildcards.model}"
        " --seed {wildcards.seed} --embeddings {input.embeddings} {params.optional}"
        " --checkpoint {input.checkpoint} --prediction {output.prediction} --threads {threads}"
        " > {log} 2>&1"


rule predict_shard:
    input:
        unpack(coarse_dem_input),
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
    output:
        prediction="results/{aoi}/shards/{shard}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{shard}/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{shard}/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS + RIDGES),
        aoi=one_of(SHARDED),
    conda:
        "../../envs/predict_shard.yaml"
    threads: 2
    params:
        settings=lambda w: section_json("prediction"),
        sharding=lambda w: section_json("sharding"),
        optional=optional_flags(coarse_dem_input),
    shell:
        "python -m aefheight predict --settings {params.settings:q}"
        " --sharding {params.sharding:q} --shard {wildcards.shard} --model {wildcards.model}"
        " --seed {wildcards.seed} --embeddings {input.embeddings} {params.optional}"
        " --checkpoint {input.checkpoint} --prediction {output.prediction} --threads {threads}"
        " > {log} 2>&1"


rule assemble_prediction:
    input:
        shards=per_shard("results/{aoi}/shards/{shard}/predictions/{model}_seed{seed}.tif"),
    output:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/assemble_prediction/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/assemble_prediction/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS + RIDGES),
        aoi=one_of(SHARDED),
    conda:
        "../../envs/assemble_prediction.yaml"
    threads: 2
    shell:
        "python -m aefheight assemble-prediction --shards {input.shards}"
        " --prediction {output.prediction} --threads {threads} > {log} 2>&1"


rule predict_coarse_dem:
    input:
        coarse_dem=aoi_input("results/{aoi}/inputs/coarse_dem.tif"),
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
    output:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(DEMS),
    conda:
        "../../envs/predict_coarse_dem.yaml"
    threads: 1
    shell:
        "python -m aefheight predict-coarse-dem --model {wildcards.model} --seed {wildcards.seed}"
        " --coarse-dem {input.coarse_dem} --embeddings {input.embeddings}"
        " --prediction {output.prediction} > {log} 2>&1"


rule correct:
    input:
        unpack(correction_inputs),
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        split="results/{aoi}/split/split.tif",
    output:
        corrected="results/{aoi}/predictions/{model}_{method}_seed{seed}.tif",
        fit="results/{aoi}/corrections/{model}_{method}_seed{seed}.csv",
    log:
        "results/{aoi}/logs/correct/{model}_{method}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/correct/{model}_{method}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(sorted({m for m, _ in CORRECTED.values()})),
    conda:
        "../../envs/correct.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("correction"),
        optional=optional_flags(correction_inputs),
    shell:
        "python -m aefheight correct --model {wildcards.model} --method {wildcards.method}"
        " --seed {wildcards.seed} --settings {params.settings:q} {params.optional}"
        " --prediction {input.prediction} --split {input.split}"
        " --corrected {output.corrected} --fit {output.fit} > {log} 2>&1"
