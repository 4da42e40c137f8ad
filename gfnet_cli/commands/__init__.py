"""Sub-commands of the ``gfnet`` console script, one module each (``add_arguments(parser)`` + ``run(args)``)."""
