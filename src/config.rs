//! The standalone TOML config (the original plugin's keys), validated into `PluginSettings`.
