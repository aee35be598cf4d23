//! Test doubles for Teleport and Mattermost.
