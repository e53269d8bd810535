"""The Hydra configs, shipped with the package: `pkg://mindprint.conf` for an installed mindprint."""
