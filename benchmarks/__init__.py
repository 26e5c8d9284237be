"""asv benchmark suite of fastrnn (see asv.conf.json at the repository root)."""
