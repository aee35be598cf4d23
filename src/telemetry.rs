//! Logging setup (text or JSON, stdout/stderr/file).
