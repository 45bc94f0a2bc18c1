"""Qt-free jobs shared by the CLI and the panel."""
