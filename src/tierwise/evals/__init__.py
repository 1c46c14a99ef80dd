"""Offline evaluation: recorded per-prompt results of real models, and policies replayed over them.

Each module imports only modules listed before it (``tests/evals/test_layout.py`` keeps it so):

    records · curves · splits · metrics      the dataset shape; curve, metric and fold arithmetic
    arena · generic · routellm · datasets    loaders by source, and ``load_dataset`` by name or path
    fleet · replay · routing                 the fleet; score and cost matrices; ``EvalPolicy``, ``Routing``
    baselines · cascade · run · output       the baselines; the cascade replay; the report and its files
    hybrid · learned · utility · policies    learned routers (gap threshold; quality − λ·cost); make_policy
    ledger_data                              the ledger's labelled prompts as a dataset
"""
