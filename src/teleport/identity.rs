//! The plugin's Teleport identity: certificate, key and cluster CAs from PEM.
