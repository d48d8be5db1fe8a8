"""mammoth's Hydra configs, shipped inside the package as ``mammoth.conf`` (``pkg://mammoth.conf``)."""
