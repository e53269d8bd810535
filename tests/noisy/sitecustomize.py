"""Makes libraries log while being imported, as bitsandbytes does on CPUs with AVX512-BF16.

On PYTHONPATH, Python imports this module at start-up. It wraps the import of each module in NOISY so
that, once loaded, it logs a warning through that library's own logger (the logger the real message
uses), and appends the module's name to $NOISY_LOG, so a test knows the injection happened.
"""

import importlib.abc
import importlib.util
import logging
import os
import sys

NOISY = {
    "bitsandbytes": "bitsandbytes.backends.cpu.ops",  # "Failed to load CPU gemm_4bit_forward from kernels-community"
    "deepspeed": "DeepSpeed",  # "Setting accelerator to CPU"
    "transformers": "transformers.modeling_utils",
    "huggingface_hub": "huggingface_hub.file_download",
}


class NoisyImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in NOISY:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            logging.getLogger(NOISY[name]).warning("injected: %s logged while being imported", name)
            with open(os.environ["NOISY_LOG"], "a") as log:
                log.write(name + "\n")

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("NOISY_LOG"):
    sys.meta_path.insert(0, NoisyImports())
