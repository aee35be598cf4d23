//! `teleport-mattermost start`: one bridge and its callback server from a TOML file.
