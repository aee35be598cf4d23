//! A Mattermost server double.
