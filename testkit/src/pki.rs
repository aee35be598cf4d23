//! Test certificates made with rcgen.
