"""Makes every installed library log while being imported, as bitsandbytes and `kernels` do on CPUs with
AVX512-BF16 (and as the next release of anything may).

On PYTHONPATH, Python imports this module at start-up. It wraps the import of each top-level package that lies in
site-packages (the standard library, a checkout and Hydra's own launcher lines aside: mindprint.console.SPEAKING)
so that, once loaded, it logs a warning through that library's logger and through a child of it (where libraries
log from: `kernels._internals.hf_hub`), and appends the package's name to $NOISY_LOG, so a test knows which
injections happened. DeepSpeed's logger is named `DeepSpeed`, not after its package: it gets its own line too.
"""

import importlib.abc
import importlib.util
import logging
import os
import site
import sys

SPEAKING = ("hydra", "hydra_plugins")  # as mindprint.console.SPEAKING (test_console checks they agree)
OWN_NAMES = {"deepspeed": "DeepSpeed"}
LIBRARIES = tuple(os.path.join(os.path.realpath(p), "") for p in site.getsitepackages())


class NoisyImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if path is not None or name in sys.stdlib_module_names or name.startswith(("mindprint", *SPEAKING)):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not os.path.realpath(spec.origin or "").startswith(LIBRARIES):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            for logger in (name, f"{name}._internals", OWN_NAMES.get(name)):
                if logger:
                    logging.getLogger(logger).warning("injected: %s logged while being imported", name)
            with open(os.environ["NOISY_LOG"], "a") as log:
                log.write(name + "\n")

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("NOISY_LOG"):
    sys.meta_path.insert(0, NoisyImports())
