"""Reading and comparing finished runs: run directories (`runs`), the statistics a comparison rests on
(`stats`), the Markdown report and plots (`compare`), and Hydra sweeps (`sweep`)."""
