"""The math, as small pure functions on tensors: PPO's objective (`ppo`) and the critic-free estimators and loss
aggregations (`estimators`). Nothing here knows a model, a process or a file."""
