"""Your own voice: `python -m mindprint.voice texts=DIR` takes a folder of writing through prepare → SFT → pairs →
reward model → PPO → evaluation → report (`pipeline`), measuring style with Burrows' Delta, which the reward model
cannot fool (`mindprint.analysis.style`)."""
