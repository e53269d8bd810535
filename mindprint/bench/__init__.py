"""`python -m mindprint.bench cpu|gpu` (`mindprint-bench`): mindprint against TRL, and the GPU baseline. The TRL
scripts (`trl_ppo.py`, `trl_grpo.py`) ship inside the package and are run by file path, so an installed mindprint
reaches them too."""
