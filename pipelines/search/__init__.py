r"""Find the best student for a latency budget: a multi-objective search over pipeline runs.

    python -m pipelines.search --flagfile=pipelines/configs/digits.flags \
        --space=pipelines/configs/digits.space --trials=12 --objective=accuracy,latency_ms \
        --out_dir=runs/search

1. Runs the base flags once as an ordinary run (`SEARCH/base/`): its teacher is then shared by
   every trial, and its shipped models are the points the search must beat.
2. Ray Tune runs `--trials` pipeline runs, each the base flags with one point of the space
   (`pipelines/search/space.py`), chosen by Optuna's multi-objective TPE sampler. A trial distils,
   runs QAD, exports one mode and measures that `.tflite` (accuracy through LiteRT, latency on
   this host, or on the phone of `--serial`). Trials share the teacher's logits
   (`SEARCH/teacher_cache/`, built by the first trial that needs them).
3. Measures every finished trial's file again, one at a time, and writes `SEARCH/report.md`:
   the Pareto front, the model recommended for the budget (copied to `SEARCH/recommended/`)
   and every trial's flags.

Ray starts on this machine unless `--address` names a running cluster (docs/search.md). A
killed search resumes from Ray Tune's experiment state when rerun with the same command.
"""
