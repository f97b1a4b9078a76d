"""The user-facing steps (index, select, train, forget, evaluate, merge, report) as plain Python calls.

Each step reads and writes files so it can be rerun and inspected alone; the CLI calls exactly these.
"""
