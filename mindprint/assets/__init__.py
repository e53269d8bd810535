"""Files shipped with the package: the tokenizers' training text and the demo prompts."""

from importlib import resources


def path(name: str) -> str:
    """Absolute path of a file shipped in mindprint/assets (the `${asset:NAME}` config resolver)."""
    return str(resources.files(__name__) / name)
