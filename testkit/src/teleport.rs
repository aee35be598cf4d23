//! A Teleport Auth server double.
