"""Stand-ins built locally for what lives on the hub: tiny models with trained tokenizers (`tiny`), random
models at full shapes (`shapes`), a synthetic preference set (`pairs`) and a learnable demo rule (`rules`)."""
