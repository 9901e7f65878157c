"""The training layer every recipe stands on: accelerate/DeepSpeed setup (``accel``), step
planning and batching (``plan``), checkpoints and resume (``checkpoints``), the metrics log and
trackers (``metrics``), the optimizer and schedule (``optim``), model loading, LoRA merging and
saving (``models``). It imports neither ``reward`` nor ``policy``; both import it."""
