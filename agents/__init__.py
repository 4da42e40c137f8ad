"""GFNet agents: the paper's PPO and its training loop."""
