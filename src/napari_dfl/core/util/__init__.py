"""Small shared utilities of the core: atomic writes, progress driving, config parsing."""
