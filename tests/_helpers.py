"""Shared test helpers (importable from test modules: pytest puts tests/ on sys.path)."""
from ncutils import config, train


def tiny_config(**kw):
    """A seconds-long MNIST MLP run config built from the terminal_phase smoke preset."""
    exp = config.get_preset("terminal_phase", "smoke")
    cfg = train.run_config(exp, "mnist", "mlp", seed=3, n_per_class=12, test_per_class=6, epochs=4,
                           width=32, n_snapshots=3)
    cfg.update(kw)
    if "lr_milestones" not in kw and cfg["epochs"] < 3:  # 1/3 of 1 or 2 epochs floors to epoch 0
        cfg["lr_milestones"] = (1,) if cfg["epochs"] == 2 else ()
    return cfg
