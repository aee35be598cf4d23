//! The engine for one plugin instance: Teleport events in, Mattermost posts out.
