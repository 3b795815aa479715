"""The bundled RL presets: ``<name>.toml`` in this package holds the full RLConfig of preset ``name``.

:data:`PRESETS` is their registry, read by :func:`repana.rl.config.load_preset`, ``repana train
--preset`` and ``repana reproduce --rl``. This module imports nothing, so the command can check a
preset name before loading torch.
"""

# preset name -> the environment it trains on (its TOML's ``env``)
PRESETS: dict[str, str] = {
    "rl-2dnav": "2d-navigation",
    "rl-halfcheetah-dir": "halfcheetah-dir",
    "rl-halfcheetah-vel": "halfcheetah-vel",
}
