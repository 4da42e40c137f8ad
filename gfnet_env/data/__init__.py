"""Images for the env: reading, decoding and caching them.

* :mod:`~gfnet_env.data.image_folder` — ImageFolder datasets, per-backbone transforms, denormalising;
* :mod:`~gfnet_env.data.cluttered_fashion_mnist` — the embedded default task's dataset;
* :mod:`~gfnet_env.data.loading` — threaded per-slot loading, the raw-item protocol (uint8 pixels or JPEG bytes);
* :mod:`~gfnet_env.data.decoding` — batched JPEG decoding (torchvision, any device) and the PIL fallback;
* :mod:`~gfnet_env.data.prepared` — the prepared evaluation cache (a memory-mapped uint8 split);
* :mod:`~gfnet_env.data.seeded` — augmentation drawn from a per-load seed;
* :mod:`~gfnet_env.data.host_memory` — glibc's malloc tuned for the networks' CPU activations.
"""
