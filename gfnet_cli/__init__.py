"""The ``gfnet`` command: :mod:`gfnet_cli.main` assembles one module per sub-command (:mod:`gfnet_cli.commands`);
:mod:`gfnet_cli.show` draws where agents look; :mod:`gfnet_cli.default_task` is the embedded task's training
pipeline. This package sits above ``agents`` (it may import everything; nothing imports it)."""
