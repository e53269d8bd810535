"""Your own voice: from a folder of writing to training data (`prepare`), and a measure of style the reward model
cannot fool (`style`, Burrows' Delta)."""
