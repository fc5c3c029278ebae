"""`tuneloop sweep`: hyperparameter search with Optuna over train settings, scored on the validation split.

    space.py   what a trial varies: Optuna suggestions for the `sweep.space` keys, applied to the pipeline YAML
    study.py   the study in its database: created, resumed (a killed sweep's unfinished trial is re-queued), shared
    run.py     the trials: each an ordinary train run folder, pruned on its validation curve; the best registered
    report.py  the table of trials, sweep.json, and Optuna's importance and parallel-coordinate plots

The test split is never read to choose: trials are scored on validation only, and `--register` evaluates the best
trial on the test split afterwards, as `tuneloop run` does.
"""
