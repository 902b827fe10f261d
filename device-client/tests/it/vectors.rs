//! The swtpm-proven vector set.
