"""`medunlearn tune`: choose a method's hyperparameters on VALIDATION rows under the acceptance criteria.

budget.py (time-budget parsing), sealed.py (test rows removed before a study sees the data),
monitor.py (intermediate values for pruning, the study deadline), study.py (the Optuna study and its objective),
output.py (tuned YAML, trials table, importance plot, best-trial summary).
"""
