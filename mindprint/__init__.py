"""mindprint: PPO and critic-free RLHF on LoRA adapters, experiments easy to run, sweep and compare."""

from mindprint.console import quiet_libraries

quiet_libraries()  # before any entry point imports a library that logs while being imported
