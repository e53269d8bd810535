"""The engine of a run: the four models, prompts, scorers, the loop (rollout → estimator → update → log),
checkpoints and launching on several processes. Standard library only here: TRL's benchmark venv imports
`mindprint.engine.hostmem`."""
