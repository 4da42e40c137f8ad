"""GFNet networks: encoders, classifiers, the patch proposal policy."""
