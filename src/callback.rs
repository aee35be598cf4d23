//! The callback server for Approve/Deny button presses.
