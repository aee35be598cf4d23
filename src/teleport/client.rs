//! The Teleport Auth API calls the bridge and the callback server make.
