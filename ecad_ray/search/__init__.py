"""ECAD's evolutionary schedule search: NSGA-II over one bit per (step, block, sub-layer).

    layout = GenomeLayout(spec, steps)             # genome <-> ECAD schedule (genome.py)
    run_search(config, evaluator, progress)        # generations in ECAD's layout, resumable (run.py)
    front_rows(folder)                             # the Pareto front so far (quality vs MACs)

Scoring a candidate (`evaluator.py`: model loaded once, schedule applied per candidate) and the
quality objectives (`objectives.py`) know nothing of Ray; `actors/search.py` runs workers on a
Ray pool that stays up across candidates and generations.
"""
