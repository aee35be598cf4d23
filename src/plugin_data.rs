//! The plugin data this plugin keeps on each access request in Teleport, and its codec.
